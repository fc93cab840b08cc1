"""Two sources on the helpers' brief (grid-scale energy storage): a Markdown note and a PDF report."""

from __future__ import annotations

from tests.support.pdf import text_pdf

MARKDOWN = """\
# Storage technologies

Lithium-ion batteries dominate new grid storage projects because their cells are made at scale for
electric vehicles. A typical project stores two to four hours of energy, and round-trip efficiency is
about 85 to 90 percent. Degradation limits their life to roughly 4,000 to 6,000 full cycles.

Pumped hydro storage moves water between two reservoirs at different heights. It provides most of the
world's installed storage capacity, with durations of eight hours or more, but it needs suitable
geography and a decade to permit and build.

# Costs

Battery pack prices fell by about 80 percent over the last decade. Installed costs for a four-hour
battery system are dominated by cells, power conversion, and grid interconnection, while operating
costs depend on cycling, augmentation and warranties.

Levelized cost of storage compares technologies over their lives: capital, efficiency losses, and
replacement of degraded components all count.
"""

PDF_PAGES = [
    [
        "Siting grid storage near substations reduces interconnection cost and queue time.",
        "Planners weigh land use, fire safety setbacks, noise, and community consent.",
        "Co-locating storage with solar farms shares the interconnection and the land lease.",
    ],
    [
        "Policy: capacity markets and resource adequacy rules decide whether storage is paid",
        "for being available. Tax credits for standalone storage changed project economics.",
        "Regulators increasingly require planners to model storage in integrated resource plans.",
    ],
]


def pdf_bytes() -> bytes:
    return text_pdf(PDF_PAGES)
