"""The project's own Delta Sharing server: state (``state``), protocol (``app``), Delta reading
(``tables``), signed URLs (``signing``), predicate skipping (``predicates``) and start-up (``serve``)."""

DEFAULT_SHARING_ENDPOINT = "http://127.0.0.1:8080/delta-sharing"
"""Where recipients reach the server unless GW_SHARING_ENDPOINT says otherwise (it is in their profile files)."""
