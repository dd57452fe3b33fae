"""The named conventions for scoring empty masks (``--empty-policy``), apart from the metric code so that
the command line can list them without importing medpy."""
from __future__ import annotations

EMPTY_POLICIES: dict[str, str] = {
    "ssl4mis": (
        "SSL4MIS calculate_metric_percase: empty prediction -> dice=jaccard=hd95=asd=0 (also when truth "
        "is empty); empty truth with non-empty prediction (SSL4MIS crashes in medpy) -> all 0"
    ),
    "zero": "BCP / KnowSAM: prediction or truth empty -> dice=jaccard=hd95=asd=0",
    "strict": (
        "both empty -> dice=jaccard=1, hd95=asd=0; exactly one empty -> dice=jaccard=0, hd95 and asd "
        "reported as the diagonal of the image in spacing units"
    ),
    "synfoc": (
        "SynFoC: both empty -> dice=jaccard=1, hd95=asd=0; exactly one empty -> dice=jaccard=0, "
        "hd95=asd=100"
    ),
    "nan": (
        "CPC-SAM (empty predictions dropped): prediction or truth empty -> all four NaN, so nan-means "
        "leave the class out"
    ),
}
