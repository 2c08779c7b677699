"""Closed GOPs: the chunker that cuts a packet stream into GopChunk records, the H.264 reading that
polices a feed without decoding it, and the check that decodes one GOP from its record alone."""
