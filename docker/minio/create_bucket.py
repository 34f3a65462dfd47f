"""Create MLflow's artifact bucket in MinIO if it is missing (the compose job `minio-init`).

Idempotent: an existing bucket is left as it is. Reads the endpoint and credentials from the
environment the compose file passes: MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and ARTIFACT_BUCKET.
"""

from __future__ import annotations

import os
import sys

import boto3
from botocore.exceptions import ClientError


def main() -> int:
    bucket = os.environ["ARTIFACT_BUCKET"]
    s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
    try:
        s3.head_bucket(Bucket=bucket)
        print(f"minio-init: bucket {bucket} exists")
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket"}:
            print(f"minio-init: cannot check bucket {bucket}: {err}", file=sys.stderr)
            return 1
        s3.create_bucket(Bucket=bucket)
        print(f"minio-init: created bucket {bucket}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
