"""Params and MACs (fvcore, the papers' convention; torch's counter beside it) of every model at
its paper size and at the input size of each published table that lists it (one test per point,
parametrized by the conftest from ``bench.papers.profile_points``)."""


def test_profile(store, profile_point):
    prof = store.profile(profile_point)
    assert prof["params_m"] > 0 and prof["gmacs_fvcore"] > 0 and prof["input_size"] == profile_point.size
    store.record("profile", **{**prof, **profile_point.as_dict()})
