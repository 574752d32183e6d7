"""Image stage: references, registry client, auth, manifests and the OCI-layout store."""
