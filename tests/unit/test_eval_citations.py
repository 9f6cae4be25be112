from retro_vllm.evaluation.citations import Outcome, overlap, table
from retro_vllm.scoring import token_f1


def test_token_f1_ignores_markers_case_and_articles():
    assert token_f1("The Moon orbits Earth [2].", "moon orbits the earth") == 1.0
    assert token_f1("Nothing alike", "moon orbits earth") == 0.0
    assert 0 < token_f1("The Moon orbits", "moon orbits earth") < 1


def test_overlap_is_the_share_of_answer_words_in_cited_text():
    assert overlap("red planet dust", ["Mars is the red planet."]) == 2 / 3
    assert overlap("anything", []) is None


def test_table_reports_marker_validity_over_all_markers():
    outcomes = [
        Outcome("a", True, True, True, True, 1.0, 10, routed_domain="a", markers=3, invalid_markers=1,
                answer_f1=0.5, cited_overlap=1.0),
        Outcome("a", False, False, False, False, 2.0, 10, routed_domain="a"),
    ]
    last = table(outcomes).splitlines()[-1]
    assert "| all | 2 | 100.0% | 50.0% | 50.0% | 66.7% | 50.0% | 100.0% | 0.500 | 1.000 |" in last
