"""Pure parsers: kernel text in, Events out; nothing here opens a file.

Other packages use `LineParser` (one line at a time, any format) and `event_to_json` /
`event_from_json` (the `hwpoisond parse` JSON contract).
"""

from hwpoisond.parse.jsonio import event_from_json, event_to_json
from hwpoisond.parse.stream import LineParser, ParseStats

__all__ = ["LineParser", "ParseStats", "event_from_json", "event_to_json"]
