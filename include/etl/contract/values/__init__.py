"""One cleaner per column type: raw text in, typed values and a reason per row out."""
