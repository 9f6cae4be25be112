from retro_vllm.server.request import drop_server_only_xargs


def test_client_sent_retro_xargs_are_dropped_and_others_kept():
    body = {"vllm_xargs": {"retro_passages": "evil", "retro_bias": 9.0, "other": 1}}
    drop_server_only_xargs(body)
    assert body["vllm_xargs"] == {"other": 1}


def test_bodies_without_xargs_are_untouched():
    body = {"model": "m"}
    drop_server_only_xargs(body)
    assert body == {"model": "m"}


def test_server_timing_header_lists_each_step_once():
    from retro_vllm.rag.timing import Timings

    timings = Timings()
    assert timings.header() == {}
    with timings.measure("search"):
        pass
    with timings.measure("search"):
        pass
    header = timings.header()["Server-Timing"]
    assert header.startswith("retro-search;dur=") and header.count("retro-search") == 1
