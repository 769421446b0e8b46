"""The key sets of the factory API's builder documents, as the tests of both tiers check them."""

#: Keys of the spec's builder / target image examples.
SPEC_BUILDER_KEYS = {
    "status",
    "_type",
    "completed",
    "provider_account_identifier",
    "image_id",
    "href",
    "operation",
    "id",
    "build_id",
    "target",
    "provider",
    "target_image_id",
}
#: What we add to every builder, additively: why it failed, its stages, and the worker that runs or ran it.
ADDED_KEYS = {"status_detail", "stage", "stages", "worker"}
#: A build builder's keys (with the image's size and hash) and a push builder's (with the id on the provider).
BUILDER_KEYS = SPEC_BUILDER_KEYS | ADDED_KEYS | {"image_size", "image_sha256"}
PUSH_BUILDER_KEYS = SPEC_BUILDER_KEYS | ADDED_KEYS | {"identifier_on_provider"}
