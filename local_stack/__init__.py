"""The embedded local stack: real PostgreSQL, an S3 API (moto server), an SMTP sink and Airflow.

Started and stopped by the project itself (`make up`, `make demo`, `make down`) and by the
end-to-end tests, with every process tracked by PID under `.local/`.
"""
