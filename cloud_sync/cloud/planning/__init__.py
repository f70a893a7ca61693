"""The cloud's route planner: packages, vans and a station -> blocks with sequenced routes (a VRP with time
windows and capacities, solved by PyVRP), travel times from a pluggable `TravelTimes` provider, and the
re-planner that turns traffic/weather factor updates into new route versions.
"""
