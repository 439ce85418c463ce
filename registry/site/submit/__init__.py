"""registry-submit: a site's spreadsheet (REDCap export or the registry's template), de-identified
at the site and sent to the registry."""
