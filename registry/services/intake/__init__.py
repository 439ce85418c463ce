"""What sites send: writes, batches, records, uploads, the site overview and demo data."""
