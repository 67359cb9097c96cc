"""The API's JSON parser: DRF's, plus a clean 400 for input nested too deeply to parse
(Python's json raises RecursionError there, which DRF's parser lets through as a 500)."""

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply.") from exc
