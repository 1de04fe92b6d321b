"""The medallion checks read the engine's figures: each verdict, and no verdict without its figures."""

from guidewire_pipeline.medallion.checks import evaluate


def verdicts(layer: str, metadata: dict) -> list[tuple[str, bool]]:
    return [(c.name, c.passed) for c in evaluate(layer, metadata)]


def test_bronze_reconciles_only_when_its_rows_are_what_it_held_plus_what_it_consumed():
    assert verdicts("bronze", {"bronze_rows": 10, "raw_rows_consumed": 10}) == [("reconciles_with_raw", True)]
    assert verdicts("bronze", {"bronze_rows": 12, "raw_rows_consumed": 10}) == [("reconciles_with_raw", False)]
    assert verdicts("bronze", {"bronze_rows": 12}) == []  # figures missing: not evaluated, never guessed


def test_silver_fails_when_an_id_has_two_live_rows():
    assert verdicts("silver", {"live_rows": 3, "distinct_live_ids": 3}) == [("one_row_per_id", True)]
    assert verdicts("silver", {"live_rows": 4, "distinct_live_ids": 3}) == [("one_row_per_id", False)]


def test_gold_is_empty_only_wrongly_when_its_inputs_hold_rows():
    assert verdicts("gold", {"row_count": 5}) == [("not_empty", True)]  # inputs not counted for a full mart
    assert verdicts("gold", {"row_count": 0, "input_rows": 7}) == [("not_empty", False)]
    assert verdicts("gold", {"row_count": 0, "input_rows": 0}) == [("not_empty", True)]
    assert verdicts("gold", {"row_count": 0}) == []
