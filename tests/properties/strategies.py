"""What users type, click and platforms hand over: the values the entry-point properties draw from."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.properties.world import CATALOG

# Words that have broken parsers before, or sit on a boundary: digits int() refuses ("²"), 5,000 digits,
# ids past SQLite's 2**63 - 1, control characters, lone surrogates, quotes, flags.
TRICKY = [
    "", " ", "0", "1", "-1", "99", "100", "150", "500", "²", "٣", "1e400", "nan", "inf", "-0", "0x10", "1_000",
    "9" * 19, "9" * 40, "9" * 5000, str(2**63), str(2**63 - 1), "#0", "#1", "#2", "#3", "#4", "#5", "#6", "#99",
    "#" + "9" * 19, "#" + "9" * 30, "#²", "85%", "off", "none", "true", "no", "on", "all", "here", "re:(", "re:",
    "a:b:c", "../x", "http://x", "pixel-art:0.8", "pixel-art:9", "tiny-lora", "toy-face", "tiny", "sdxl",
    "sdxl-turbo", "nosuch", "Euler a", "euler_a", "1024x1024", "1216x832", "100x100", "99999x1", "16:9", "9:1",
    "--cfg", "--steps", "--refiner", "--lora", "--ar", "--bogus", "—seed", "--", "=", "k=v", "steps=500",
    "\x00", "\x1b[31m", "\n", "\r\n", "\t", "\u200b", "\u2028", "\ud800", "é", "🦊", '"', "'", "“", "<#C1>",
    "<@U1>", "&<>", "x" * 400, "{red, blue}", "{a,{b,c}}", "{", "}", "\\{", "{,}", "{a,b}" * 7,
    "{red|blue}", "{2$$a|b|c}", "{1-3$$ and $$a|b}", "{-$$a|b}", "{3::a|0.5::b}", "{0::a|0::b}", "{101$$a|b}",
    "{2$$__animal__}", "__animal__", "__nosuch__", "__Animal__",
]  # fmt: skip

tricky = st.sampled_from(TRICKY)
# Mostly what people type; now and then anything at all, short or (repeated, which is cheap to draw) long.
texts = st.one_of(tricky, st.text(max_size=12), st.text(min_size=1, max_size=4).map(lambda s: s * 100))
phrases = st.lists(texts, max_size=4).map(" ".join)
numbers = st.one_of(st.integers(-5, 120), st.integers(), st.sampled_from([0, 1, 99, 100, 2**63, -(2**63)]))
names = st.one_of(st.sampled_from(sorted({*CATALOG.names("model"), *CATALOG.names("lora")})), texts)
