"""The shop's Streamlit dashboard over the dbt marts (schema `marts`), read-only."""
