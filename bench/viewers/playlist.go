package main

import (
	"bufio"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Part is one EXT-X-PART of a media playlist.
type Part struct {
	URI         string
	Duration    float64
	Independent bool
}

// Segment is one media segment (complete when it has an EXTINF, else the partial segment at the end).
type Segment struct {
	MSN      int
	URI      string
	Duration float64
	PDT      time.Time
	Parts    []Part
	Complete bool
	Gap      bool
}

// Report is an EXT-X-RENDITION-REPORT.
type Report struct {
	URI      string
	LastMSN  int
	LastPart int
}

// Media is a parsed media playlist (RFC 8216bis: the tags an LL-HLS player acts on).
type Media struct {
	TargetDuration float64
	PartTarget     float64
	PartHoldBack   float64
	HoldBack       float64
	CanBlock       bool
	CanSkip        bool
	MapURI         string
	Segments       []Segment // listed segments in order, a partial segment last if any
	HintURI        string
	Reports        []Report
	Ended          bool
}

// Variant is one EXT-X-STREAM-INF of the master playlist.
type Variant struct {
	URI       string
	Bandwidth int
	Name      string
}

func attrs(s string) map[string]string {
	out := map[string]string{}
	for len(s) > 0 {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			break
		}
		key := strings.TrimSpace(s[:eq])
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, "\"") {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				val, s = s[1:], ""
			} else {
				val, s = s[1:end+1], s[end+2:]
			}
		} else {
			end := strings.IndexByte(s, ',')
			if end < 0 {
				val, s = s, ""
			} else {
				val, s = s[:end], s[end:]
			}
		}
		out[key] = val
		s = strings.TrimPrefix(s, ",")
	}
	return out
}

// resolve a playlist URI against the playlist's URL; plain relative names (all ours) take the fast path.
func resolve(base *url.URL, ref string) string {
	if ref != "" && !strings.ContainsAny(ref[:1], "/.") && !strings.Contains(ref, ":") {
		p := base.Path
		return base.Scheme + "://" + base.Host + p[:strings.LastIndexByte(p, '/')+1] + ref
	}
	u, err := url.Parse(ref)
	if err != nil {
		return ref
	}
	return base.ResolveReference(u).String()
}

var (
	cacheMu sync.Mutex
	cache   = map[string]*Media{}
)

// ParseMedia parses a media playlist; URIs are resolved against base. Viewers of one rendition receive
// the same bytes: a parse is shared (read-only) by all of them, so the simulator's cost per viewer
// stays that of an HTTP exchange.
func ParseMedia(text string, base *url.URL) *Media {
	key := base.Host + base.Path + "\x00" + text
	cacheMu.Lock()
	m, ok := cache[key]
	cacheMu.Unlock()
	if ok {
		return m
	}
	m = parseMedia(text, base)
	cacheMu.Lock()
	if len(cache) > 256 {
		cache = map[string]*Media{}
	}
	cache[key] = m
	cacheMu.Unlock()
	return m
}

func parseMedia(text string, base *url.URL) *Media {
	m := &Media{TargetDuration: 4}
	seq := 0
	var pdt time.Time
	var cur Segment
	havePDT := false
	var extinf float64
	inSeg := false
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<16), 1<<22)
	var last *Segment
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case strings.HasPrefix(line, "#EXT-X-TARGETDURATION:"):
			m.TargetDuration, _ = strconv.ParseFloat(line[22:], 64)
		case strings.HasPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"):
			seq, _ = strconv.Atoi(line[22:])
		case strings.HasPrefix(line, "#EXT-X-PART-INF:"):
			m.PartTarget, _ = strconv.ParseFloat(attrs(line[16:])["PART-TARGET"], 64)
		case strings.HasPrefix(line, "#EXT-X-SERVER-CONTROL:"):
			a := attrs(line[22:])
			m.PartHoldBack, _ = strconv.ParseFloat(a["PART-HOLD-BACK"], 64)
			m.HoldBack, _ = strconv.ParseFloat(a["HOLD-BACK"], 64)
			m.CanBlock = a["CAN-BLOCK-RELOAD"] == "YES"
			m.CanSkip = a["CAN-SKIP-UNTIL"] != ""
		case strings.HasPrefix(line, "#EXT-X-SKIP:"):
			n, _ := strconv.Atoi(attrs(line[12:])["SKIPPED-SEGMENTS"])
			seq += n
		case strings.HasPrefix(line, "#EXT-X-MAP:"):
			if m.MapURI == "" {
				m.MapURI = resolve(base, attrs(line[11:])["URI"])
			}
		case strings.HasPrefix(line, "#EXT-X-PROGRAM-DATE-TIME:"):
			if t, err := time.Parse(time.RFC3339Nano, line[25:]); err == nil {
				pdt, havePDT = t, true
				if !inSeg {
					cur.PDT = pdt
				}
			}
		case strings.HasPrefix(line, "#EXT-X-PART:"):
			a := attrs(line[12:])
			d, _ := strconv.ParseFloat(a["DURATION"], 64)
			if !inSeg {
				inSeg = true
				cur.PDT = pdt
			}
			cur.Parts = append(cur.Parts, Part{URI: resolve(base, a["URI"]), Duration: d, Independent: a["INDEPENDENT"] == "YES"})
		case strings.HasPrefix(line, "#EXTINF:"):
			v := line[8:]
			if i := strings.IndexByte(v, ','); i >= 0 {
				v = v[:i]
			}
			extinf, _ = strconv.ParseFloat(v, 64)
			if !inSeg {
				inSeg = true
				cur.PDT = pdt
			}
		case line == "#EXT-X-GAP":
			cur.Gap = true
		case strings.HasPrefix(line, "#EXT-X-PRELOAD-HINT:"):
			a := attrs(line[20:])
			if a["TYPE"] == "PART" {
				m.HintURI = resolve(base, a["URI"])
			}
		case strings.HasPrefix(line, "#EXT-X-RENDITION-REPORT:"):
			a := attrs(line[24:])
			r := Report{URI: resolve(base, a["URI"]), LastPart: -1}
			r.LastMSN, _ = strconv.Atoi(a["LAST-MSN"])
			if lp, ok := a["LAST-PART"]; ok {
				r.LastPart, _ = strconv.Atoi(lp)
			}
			m.Reports = append(m.Reports, r)
		case line == "#EXT-X-ENDLIST":
			m.Ended = true
		case strings.HasPrefix(line, "#"):
		default: // a segment URI closes the segment
			cur.MSN, cur.URI, cur.Duration, cur.Complete = seq, resolve(base, line), extinf, true
			if cur.PDT.IsZero() && last != nil && !last.PDT.IsZero() {
				cur.PDT = last.PDT.Add(time.Duration(last.Duration * float64(time.Second)))
			}
			m.Segments = append(m.Segments, cur)
			last = &m.Segments[len(m.Segments)-1]
			seq++
			if havePDT {
				pdt = cur.PDT.Add(time.Duration(extinf * float64(time.Second)))
			}
			cur, inSeg = Segment{}, false
		}
	}
	if inSeg && len(cur.Parts) > 0 { // the partial segment being built
		cur.MSN = seq
		if cur.PDT.IsZero() && last != nil && !last.PDT.IsZero() {
			cur.PDT = last.PDT.Add(time.Duration(last.Duration * float64(time.Second)))
		}
		for _, p := range cur.Parts {
			cur.Duration += p.Duration
		}
		m.Segments = append(m.Segments, cur)
	}
	return m
}

// ParseMaster returns the variants (highest bandwidth first) and the first audio rendition URI.
func ParseMaster(text string, base *url.URL) ([]Variant, string) {
	var vs []Variant
	audio := ""
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if strings.HasPrefix(line, "#EXT-X-MEDIA:") {
			a := attrs(line[13:])
			if a["TYPE"] == "AUDIO" && a["URI"] != "" && audio == "" {
				audio = resolve(base, a["URI"])
			}
		}
		if strings.HasPrefix(line, "#EXT-X-STREAM-INF:") && i+1 < len(lines) {
			a := attrs(line[18:])
			bw, _ := strconv.Atoi(a["BANDWIDTH"])
			uri := strings.TrimSpace(lines[i+1])
			name := uri
			if j := strings.IndexByte(uri, '/'); j > 0 {
				name = uri[:j]
			}
			vs = append(vs, Variant{URI: resolve(base, uri), Bandwidth: bw, Name: name})
		}
	}
	for i := 1; i < len(vs); i++ { // insertion sort, highest first
		for j := i; j > 0 && vs[j].Bandwidth > vs[j-1].Bandwidth; j-- {
			vs[j], vs[j-1] = vs[j-1], vs[j]
		}
	}
	return vs, audio
}

// Last is the newest listed part (msn, index) or, without parts, the newest segment with part -1.
func (m *Media) Last() (int, int) {
	if len(m.Segments) == 0 {
		return -1, -1
	}
	s := m.Segments[len(m.Segments)-1]
	if len(s.Parts) > 0 {
		return s.MSN, len(s.Parts) - 1
	}
	return s.MSN, -1
}

// Find returns the segment with this msn.
func (m *Media) Find(msn int) *Segment {
	if len(m.Segments) == 0 {
		return nil
	}
	i := msn - m.Segments[0].MSN
	if i < 0 || i >= len(m.Segments) {
		return nil
	}
	return &m.Segments[i]
}
