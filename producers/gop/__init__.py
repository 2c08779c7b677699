"""Closed GOPs: the chunker that cuts a packet stream into GopChunk records, the H.264 reading that
polices a feed without decoding it, the check that decodes one GOP from its record alone, and the
rules of --normalize auto (which GOPs conform, when to switch, identities across switches)."""
