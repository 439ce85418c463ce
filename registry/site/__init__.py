"""What runs at a partner site and installs without the server: the REDCap sync,
registry-submit for spreadsheets, and the HTTP client for the registry."""
