"""Infrastructure as code for AWS: the CDK app (app.py, stack.py) and names shared with the MWAA bundle."""
