# Astro Runtime 3.3-8 ships Apache Airflow 3.3.2, the version pinned for local
# development in requirements-dev.txt (checked against Astronomer's runtime release
# catalog; see README "Deploying"). requirements.txt adds what the image lacks.
FROM astrocrpublic.azurecr.io/runtime:3.3-8
