import math

import pytest

from theorylab import plotting


def test_markdown_table_cells_missing_values_and_pipes():
    table = plotting.markdown_table(["name", "value"], [["a|b", "1.5"], ["c", math.nan], ["d", None]])
    assert table.data.splitlines() == ["| name | value |", "|---|---|", "| a\\|b | 1.5 |", "| c | – |",
                                       "| d | – |"]
    with pytest.raises(ValueError, match="2 cells"):
        plotting.markdown_table(["name", "value"], [["only one"]])
