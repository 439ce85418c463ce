"""REDCap at the sites: the data dictionary they import and registry-redcap-sync."""
