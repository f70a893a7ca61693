"""Barcode scanners on a serial line: CR/LF terminated lines, optional AIM symbology prefix, GS1 data."""
from firmware_bridge.scanner.parse import Gs1Field, Scan, Symbology, parse_line
from firmware_bridge.scanner.reader import DoubleReadFilter, ScannerConfig, ScannerReader, ScannerStats

__all__ = ["DoubleReadFilter", "Gs1Field", "Scan", "ScannerConfig", "ScannerReader", "ScannerStats", "Symbology",
           "parse_line"]
