"""The operator's page over the reference cloud's database: a JSON API, live updates by server-sent events,
a static page (no CDN), operator accounts with sessions. Reads the cloud database through its own read-only
connection; the only writes are the operator's actions (re-offer a block) and the accounts file."""
