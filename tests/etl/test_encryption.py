"""Objects the pipeline writes carry the configured server-side encryption."""

from __future__ import annotations

import pytest

from include.etl.contract.transform import transform_file
from include.etl.reading import storage
from include.etl.settings import DatasetSettings
from tests.helpers import moto_s3

BODY = (
    b"order_id,order_ts,customer_id,product_name,category,quantity,unit_price,region\n"
    b"A,2026-01-01 10:00,c,p,x,1,1.00,North\nB,2026-01-01 10:00,c,p,x,0,1.00,North\n"
)


@pytest.mark.parametrize(
    ("sse", "key_id", "expected"),
    [
        pytest.param("AES256", "", {"ServerSideEncryption": "AES256"}, id="sse-s3"),
        pytest.param("aws:kms", "alias/etl", {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/etl"}, id="kms"),
    ],
)
def test_processed_and_rejected_objects_are_encrypted(contract, sse, key_id, expected) -> None:
    settings = DatasetSettings(dataset="orders", s3_sse=sse, s3_sse_kms_key_id=key_id)
    assert settings.put_args == expected
    with moto_s3("raw", "processed") as s3:
        s3.put_object(Bucket="raw", Key="raw/orders/dt=2026-01-01/a.csv", Body=BODY)
        obj = storage.list_partition(s3, "raw", "raw/orders/dt=2026-01-01/")[0][0]
        result = transform_file(s3, obj, contract, settings)
        for key in (result.processed_key, result.rejected_key):
            head = s3.head_object(Bucket="processed", Key=key)
            assert head["ServerSideEncryption"] == sse


def test_no_encryption_arguments_by_default() -> None:
    assert DatasetSettings(dataset="orders").put_args == {}
