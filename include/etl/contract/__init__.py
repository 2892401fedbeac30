"""The data contract and what it does to a file: the model, its storage types, cleaning values,
the transform of one file to Parquet and rejected rows, expectations, schema evolution."""
