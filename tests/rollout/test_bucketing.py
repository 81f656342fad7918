from analemma_sdk import bucketing as sdk_bucketing
from rollout import bucketing

from ..bucketing_vectors import assert_matches_vectors


def test_server_bucketing__is_the_sdk_function_and_matches_vectors():
    assert bucketing.bucket_value is sdk_bucketing.bucket_value
    assert_matches_vectors(bucketing)
