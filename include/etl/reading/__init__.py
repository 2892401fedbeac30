"""Reading raw objects: S3 versions and the dataset's layout, and CSV bytes as exact records
(encodings, dialects, limits). Knows nothing of contracts."""
