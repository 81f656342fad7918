"""The server buckets with the SDK's function: one implementation, never two."""

from analemma_sdk.bucketing import TOTAL_WEIGHT, bucket_value, in_rollout, variant_index

__all__ = ["TOTAL_WEIGHT", "bucket_value", "in_rollout", "variant_index"]
