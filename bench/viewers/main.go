// Command viewers simulates N concurrent HLS / LL-HLS viewers against a Floodlight edge or api.
//
// Each viewer loads the master playlist, then follows one video rendition and the audio rendition as
// an LL-HLS player does: blocking playlist reloads (_HLS_msn/_HLS_part) for the next part, the
// preload-hinted part requested at the same time, rendition reports when it switches; or, with
// -mode hls, as a plain HLS player: whole segments, the playlist polled every half target duration.
// It picks renditions with the brief's buffer-based ABR (weighted average of the last 5 bandwidth
// samples, 80 % safety, x0.5 under 2 s of buffer, x0.7 under 5 s, x1.2 over 15 s), keeps a playback
// model (playhead advancing in real time, stalls when it reaches the end of what is loaded) and prints
// one JSON report: latency (now - program-date-time of the newest part fetched), stalls, errors,
// requests/s, bytes/s, renditions. bench/viewers.py builds and runs it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type config struct {
	base     string
	stream   string
	token    string
	n        int
	duration time.Duration
	ramp     time.Duration
	mode     string
	linkKbps float64
	perFile  string
}

var (
	requests atomic.Int64
	bytesIn  atomic.Int64
	errMu    sync.Mutex
	errKinds = map[string]int{}
)

func countErr(kind string) {
	errMu.Lock()
	errKinds[kind]++
	errMu.Unlock()
}

type fetched struct {
	status   int
	body     []byte
	size     int64
	transfer time.Duration // headers received -> last byte (excludes time held by the server)
	err      error
}

// withQuery appends query parameters (the URIs here never carry the _HLS_* ones already).
func withQuery(u string, kv ...string) string {
	var b strings.Builder
	b.WriteString(u)
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	for i := 0; i+1 < len(kv); i += 2 {
		b.WriteString(sep)
		b.WriteString(kv[i])
		b.WriteByte('=')
		b.WriteString(kv[i+1])
		sep = "&"
	}
	return b.String()
}

type result struct {
	ID        int     `json:"id"`
	Started   bool    `json:"started"`
	LatP50    float64 `json:"latency_p50_s"`
	LatMax    float64 `json:"latency_max_s"`
	PlayP50   float64 `json:"play_latency_p50_s"`
	Stalls    int     `json:"stalls"`
	StallMs   float64 `json:"stall_ms"`
	Errors    int     `json:"errors"`
	Rendition string  `json:"rendition"`
	Switches  int     `json:"switches"`
	Parts     int     `json:"parts"`
}

type viewer struct {
	cfg      *config
	id       int
	variants []Variant
	audio    string
	idx      int
	samples  []float64 // kbit/s
	mu       sync.Mutex
	// playback model (media time = program-date-time)
	started    bool
	playStart  time.Time // wall clock when playback started
	play0      time.Time // media time at playback start
	stallTotal time.Duration
	buffered   time.Time // media time of the end of the newest video part
	stalls     int
	lat        []float64
	playLat    []float64
	errors     int
	switches   int
	parts      int
}

func (v *viewer) playhead(now time.Time) time.Time {
	return v.play0.Add(now.Sub(v.playStart) - v.stallTotal)
}

// onVideo records a video part (or segment) that finished loading at now.
func (v *viewer) onVideo(now, pdt time.Time, dur float64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	end := pdt.Add(time.Duration(dur * float64(time.Second)))
	if !v.started {
		v.started, v.playStart, v.play0, v.buffered = true, now, pdt, end
	} else {
		if ph := v.playhead(now); ph.After(v.buffered) { // ran dry: a stall since the playhead hit the end
			v.stalls++
			v.stallTotal += ph.Sub(v.buffered)
		}
		if end.After(v.buffered) {
			v.buffered = end
		}
	}
	v.parts++
	v.lat = append(v.lat, now.Sub(pdt).Seconds())
	v.playLat = append(v.playLat, now.Sub(v.playhead(now)).Seconds())
}

func (v *viewer) bufferSeconds(now time.Time) float64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.started {
		return 0
	}
	return v.buffered.Sub(v.playhead(now)).Seconds()
}

// sample adds a bandwidth sample; emulating an access link, it also waits out the link's transfer time.
func (v *viewer) sample(ctx context.Context, f fetched) {
	t := f.transfer.Seconds()
	if v.cfg.linkKbps > 0 {
		link := float64(f.size) * 8 / (v.cfg.linkKbps * 1000)
		if link > t {
			select {
			case <-time.After(time.Duration((link - t) * float64(time.Second))):
			case <-ctx.Done():
			}
			t = link
		}
	}
	if f.size < 4096 {
		return // too small to say anything about the bandwidth
	}
	t = math.Max(t, 0.0005)
	v.samples = append(v.samples, float64(f.size)*8/t/1000)
	if len(v.samples) > 5 {
		v.samples = v.samples[1:]
	}
}

// choose is the brief's AdaptiveBitrateManager.select_quality.
func (v *viewer) choose(buffer float64) int {
	if len(v.samples) == 0 {
		return v.idx
	}
	weights := []float64{1, 2, 3, 4, 5}[5-len(v.samples):]
	var num, den float64
	for i, b := range v.samples {
		num += b * weights[i]
		den += weights[i]
	}
	safe := num / den * 0.8
	switch {
	case buffer < 2:
		safe *= 0.5
	case buffer < 5:
		safe *= 0.7
	case buffer > 15:
		safe *= 1.2
	}
	for i, q := range v.variants {
		if float64(q.Bandwidth)/1000 <= safe {
			return i
		}
	}
	return len(v.variants) - 1
}

type track struct {
	hc       hclient // playlists and parts, in order
	hint     hclient // the preload-hinted part, alongside the blocking playlist request
	video    bool
	url      string
	media    *Media
	msn      int
	part     int
	initDone string
}

func (v *viewer) fail(ctx context.Context) {
	v.mu.Lock()
	v.errors++
	v.mu.Unlock()
	select {
	case <-time.After(500 * time.Millisecond):
	case <-ctx.Done():
	}
}

func (v *viewer) load(ctx context.Context, t *track, kv ...string) bool {
	u := t.url
	if len(kv) > 0 {
		u = withQuery(u, kv...)
	}
	f := t.hc.get(ctx, u, true)
	if f.err != nil || f.status != 200 {
		if ctx.Err() == nil {
			v.fail(ctx)
		}
		return false
	}
	base, _ := url.Parse(t.url)
	t.media = ParseMedia(string(f.body), base)
	return true
}

// join picks the starting part: PART-HOLD-BACK (LL) or three segments (plain) behind the live edge.
func (v *viewer) join(t *track, ll bool) {
	m := t.media
	if len(m.Segments) == 0 {
		t.msn, t.part = 0, 0
		return
	}
	if !ll {
		i := len(m.Segments) - 3
		if i < 0 {
			i = 0
		}
		for i < len(m.Segments) && !m.Segments[i].Complete {
			i--
		}
		t.msn, t.part = m.Segments[max(i, 0)].MSN, 0
		return
	}
	hold := m.PartHoldBack
	if hold <= 0 {
		hold = 3 * m.PartTarget
	}
	last := m.Segments[len(m.Segments)-1]
	edge := last.PDT.Add(time.Duration(last.Duration * float64(time.Second)))
	want := edge.Add(-time.Duration(hold * float64(time.Second)))
	t.msn, t.part = last.MSN, 0
	for i := len(m.Segments) - 1; i >= 0; i-- {
		s := m.Segments[i]
		off := 0.0
		for j, p := range s.Parts {
			start := s.PDT.Add(time.Duration(off * float64(time.Second)))
			if !start.Before(want) && (p.Independent || !t.video) {
				t.msn, t.part = s.MSN, j
			}
			off += p.Duration
		}
		if s.PDT.Before(want) && len(s.Parts) > 0 {
			break
		}
	}
}

// next moves past the part just loaded.
func (t *track) advance() {
	s := t.media.Find(t.msn)
	t.part++
	if s != nil && s.Complete && t.part >= len(s.Parts) {
		t.msn, t.part = t.msn+1, 0
	}
}

func (v *viewer) init(ctx context.Context, t *track) bool {
	if t.media.MapURI == "" || t.media.MapURI == t.initDone {
		return true
	}
	f := t.hc.get(ctx, t.media.MapURI, false)
	if f.err != nil || f.status != 200 {
		if ctx.Err() == nil {
			v.fail(ctx)
		}
		return false
	}
	t.initDone = t.media.MapURI
	return true
}

func (v *viewer) gotPart(ctx context.Context, t *track, s *Segment, j int, f fetched) {
	if !t.video {
		return
	}
	v.sample(ctx, f)
	off := 0.0
	for k := 0; k < j; k++ {
		off += s.Parts[k].Duration
	}
	v.onVideo(time.Now(), s.PDT.Add(time.Duration(off*float64(time.Second))), s.Parts[j].Duration)
}

// switchTo moves the video track to variant i at the next segment boundary, using the new rendition's
// report (LAST-MSN/LAST-PART) to ask for a playlist that already holds the part it needs.
func (v *viewer) switchTo(ctx context.Context, t *track, i int) {
	nu := v.variants[i].URI
	msn, part := t.msn, t.part
	for _, r := range t.media.Reports {
		if strings.HasPrefix(nu, strings.SplitN(r.URI, "?", 2)[0]) && r.LastMSN < msn {
			msn, part = r.LastMSN, max(r.LastPart, 0) // never ask beyond what the report says exists + 1
		}
	}
	v.idx = i
	v.mu.Lock()
	v.switches++
	v.mu.Unlock()
	t.url = nu
	t.initDone = ""
	if !v.load(ctx, t, "_HLS_msn", strconv.Itoa(msn), "_HLS_part", strconv.Itoa(part)) {
		t.media = nil // never read the old rendition's URIs
	}
}

// runLL follows one track as an LL-HLS player.
func (v *viewer) runLL(ctx context.Context, t *track) {
	for ctx.Err() == nil && !v.load(ctx, t) {
	}
	if ctx.Err() != nil {
		return
	}
	v.join(t, true)
	for ctx.Err() == nil {
		if t.media == nil && !v.load(ctx, t) {
			continue
		}
		if !v.init(ctx, t) {
			continue
		}
		s := t.media.Find(t.msn)
		switch {
		case s != nil && t.part < len(s.Parts): // listed: load it
			f := t.hc.get(ctx, s.Parts[t.part].URI, false)
			if f.err != nil || f.status != 200 {
				if ctx.Err() == nil {
					v.fail(ctx)
					t.media = nil
				}
				continue
			}
			v.gotPart(ctx, t, s, t.part, f)
			t.advance()
			if t.video && t.part == 0 { // a segment boundary: the ABR decides
				if i := v.choose(v.bufferSeconds(time.Now())); i != v.idx {
					v.switchTo(ctx, t, i)
				}
			}
		case s != nil && s.Complete && len(s.Parts) == 0: // older than the part window: whole segment
			f := t.hc.get(ctx, s.URI, false)
			if f.err != nil || f.status != 200 {
				if ctx.Err() == nil {
					v.fail(ctx)
					t.media = nil
				}
				continue
			}
			if t.video {
				v.sample(ctx, f)
				v.onVideo(time.Now(), s.PDT, s.Duration)
			}
			t.msn, t.part = t.msn+1, 0
		case s != nil && s.Complete: // past its last part
			t.msn, t.part = t.msn+1, 0
		case t.media.Ended:
			return
		case len(t.media.Segments) > 0 && t.msn < t.media.Segments[0].MSN: // fell behind a delta update
			v.load(ctx, t)
			if len(t.media.Segments) > 0 && t.msn < t.media.Segments[0].MSN {
				t.msn, t.part = t.media.Segments[0].MSN, 0
			}
		default: // not listed yet: blocking reload for it, and the preload hint if it is that part
			lm, lp := t.media.Last()
			nm, np := lm+1, 0
			if last := t.media.Find(lm); last != nil && !last.Complete {
				nm, np = lm, lp+1
			}
			var hint chan fetched
			hintURI := t.media.HintURI
			if hintURI != "" && nm == t.msn && np == t.part {
				hint = make(chan fetched, 1)
				go func() { hint <- t.hint.get(ctx, hintURI, false) }()
			}
			want := t.msn
			wantPart := t.part
			q := []string{"_HLS_msn", strconv.Itoa(want), "_HLS_part", strconv.Itoa(wantPart)}
			if t.media.CanSkip && len(t.media.Segments) > 0 && t.msn >= t.media.Segments[0].MSN {
				q = append(q, "_HLS_skip", "YES") // a delta update: only the newest segments
			}
			ok := v.load(ctx, t, q...)
			if hint != nil {
				f := <-hint
				if ok && f.err == nil && f.status == 200 {
					if s := t.media.Find(want); s != nil && wantPart < len(s.Parts) {
						v.gotPart(ctx, t, s, wantPart, f)
						t.advance()
						if t.video && t.part == 0 {
							if i := v.choose(v.bufferSeconds(time.Now())); i != v.idx {
								v.switchTo(ctx, t, i)
							}
						}
					}
				}
			}
			if !ok {
				t.media = nil
			}
		}
	}
}

// runHLS follows one track as a plain HLS player: whole segments, playlist polled.
func (v *viewer) runHLS(ctx context.Context, t *track) {
	for ctx.Err() == nil && !v.load(ctx, t) {
	}
	if ctx.Err() != nil {
		return
	}
	v.join(t, false)
	for ctx.Err() == nil {
		if t.media == nil && !v.load(ctx, t) {
			continue
		}
		if !v.init(ctx, t) {
			continue
		}
		s := t.media.Find(t.msn)
		if s == nil || !s.Complete {
			if t.media.Ended {
				return
			}
			wait := time.Duration(math.Max(t.media.TargetDuration/2, 0.5) * float64(time.Second))
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return
			}
			v.load(ctx, t)
			continue
		}
		f := t.hc.get(ctx, s.URI, false)
		if f.err != nil || f.status != 200 {
			if ctx.Err() == nil {
				v.fail(ctx)
				t.media = nil
			}
			continue
		}
		if t.video {
			v.sample(ctx, f)
			v.onVideo(time.Now(), s.PDT, s.Duration)
		}
		t.msn++
		if t.video {
			if i := v.choose(v.bufferSeconds(time.Now())); i != v.idx {
				v.idx = i
				v.switches++
				t.url = v.variants[i].URI
				t.initDone = ""
				v.load(ctx, t)
			}
		}
	}
}

func (v *viewer) run(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	master := fmt.Sprintf("%s/live/%s/master.m3u8", v.cfg.base, v.cfg.stream)
	if v.cfg.token != "" {
		master = withQuery(master, "token", v.cfg.token)
	}
	var hc hclient
	defer hc.close()
	for ctx.Err() == nil {
		f := hc.get(ctx, master, true)
		if f.err == nil && f.status == 200 {
			base, _ := url.Parse(master)
			v.variants, v.audio = ParseMaster(string(f.body), base)
			if len(v.variants) > 0 {
				break
			}
		}
		v.fail(ctx)
	}
	if ctx.Err() != nil {
		return
	}
	v.idx = len(v.variants) / 2 // the brief: start in the middle
	run := v.runLL
	if v.cfg.mode == "hls" {
		run = v.runHLS
	}
	var tw sync.WaitGroup
	if v.audio != "" {
		tw.Add(1)
		go func() {
			defer tw.Done()
			t := &track{url: v.audio}
			run(ctx, t)
			t.hc.close()
			t.hint.close()
		}()
	}
	t := &track{video: true, url: v.variants[v.idx].URI}
	run(ctx, t)
	t.hc.close()
	t.hint.close()
	tw.Wait()
}

func (v *viewer) finish(end time.Time) result {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.started {
		if ph := v.playhead(end); ph.After(v.buffered) {
			v.stalls++
			v.stallTotal += ph.Sub(v.buffered)
		}
	}
	r := result{ID: v.id, Started: v.started, Stalls: v.stalls, StallMs: float64(v.stallTotal.Milliseconds()),
		Errors: v.errors, Switches: v.switches, Parts: v.parts}
	if len(v.variants) > 0 {
		r.Rendition = v.variants[v.idx].Name
	}
	r.LatP50, r.PlayP50 = pct(v.lat, 50), pct(v.playLat, 50)
	r.LatMax = pct(v.lat, 100)
	return r
}

func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	pos := p / 100 * float64(len(s)-1)
	lo := int(pos)
	hi := min(lo+1, len(s)-1)
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

func nanToNil(x float64) any {
	if math.IsNaN(x) {
		return nil
	}
	return math.Round(x*1000) / 1000
}

func dist(xs []float64) map[string]any {
	return map[string]any{"n": len(xs), "p50": nanToNil(pct(xs, 50)), "p95": nanToNil(pct(xs, 95)),
		"p99": nanToNil(pct(xs, 99)), "max": nanToNil(pct(xs, 100))}
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return math.NaN()
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

func main() {
	cfg := &config{}
	flag.StringVar(&cfg.base, "url", "http://127.0.0.1:8080", "edge or api base URL")
	flag.StringVar(&cfg.stream, "stream", "demo", "stream id")
	flag.StringVar(&cfg.token, "token", "", "playback token (non-public streams)")
	flag.IntVar(&cfg.n, "n", 200, "concurrent viewers")
	flag.DurationVar(&cfg.duration, "duration", 60*time.Second, "how long every viewer watches (after the ramp)")
	flag.DurationVar(&cfg.ramp, "ramp", 5*time.Second, "viewers join evenly over this long")
	flag.StringVar(&cfg.mode, "mode", "ll", "ll (LL-HLS) or hls (plain HLS)")
	flag.Float64Var(&cfg.linkKbps, "link-kbps", 0, "emulated access link per viewer (0 = loopback speed)")
	flag.StringVar(&cfg.perFile, "per-viewer", "", "write per-viewer results (JSON lines) here")
	procs := flag.Int("procs", 1, "GOMAXPROCS (cores the simulator may use)")
	flag.Parse()
	runtime.GOMAXPROCS(*procs)
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}

	viewers := make([]*viewer, cfg.n)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	start := time.Now()
	cpu0 := cpuSeconds()
	for i := range viewers {
		viewers[i] = &viewer{cfg: cfg, id: i}
	}
	go func() {
		for i, v := range viewers {
			at := start.Add(time.Duration(float64(cfg.ramp) * float64(i) / float64(cfg.n)))
			time.Sleep(time.Until(at))
			wg.Add(1)
			go v.run(ctx, &wg)
		}
	}()
	// measure the steady part: from the end of the ramp (+ one part of settling) to the end
	time.Sleep(cfg.ramp + 2*time.Second)
	req0, bytes0, t0 := requests.Load(), bytesIn.Load(), time.Now()
	steadyCPU0 := cpuSeconds()
	time.Sleep(cfg.duration)
	req1, bytes1, t1 := requests.Load(), bytesIn.Load(), time.Now()
	steadyCPU := cpuSeconds() - steadyCPU0
	cancel()
	wg.Wait()
	end := time.Now()

	var lat, playLat, vLat, stallMs []float64
	renditions := map[string]int{}
	started, stalled, stallsTotal, errorsTotal, switches := 0, 0, 0, 0, 0
	var per []result
	for _, v := range viewers {
		r := v.finish(t1)
		per = append(per, r)
		lat = append(lat, v.lat...)
		playLat = append(playLat, v.playLat...)
		if r.Started {
			started++
			vLat = append(vLat, r.LatP50)
			stallMs = append(stallMs, r.StallMs)
		}
		if r.Stalls > 0 {
			stalled++
		}
		stallsTotal += r.Stalls
		errorsTotal += r.Errors
		switches += r.Switches
		renditions[r.Rendition]++
	}
	secs := t1.Sub(t0).Seconds()
	errMu.Lock()
	kinds := map[string]int{}
	for k, n := range errKinds {
		kinds[k] = n
	}
	errMu.Unlock()
	out := map[string]any{
		"viewers": cfg.n, "started": started, "mode": cfg.mode, "url": cfg.base, "stream": cfg.stream,
		"link_kbps": cfg.linkKbps, "ramp_s": cfg.ramp.Seconds(), "measured_s": math.Round(secs*100) / 100,
		"window_start_unix": float64(t0.UnixNano()) / 1e9, "window_end_unix": float64(t1.UnixNano()) / 1e9,
		"requests_per_s": math.Round(float64(req1-req0) / secs), "mbit_per_s": math.Round(float64(bytes1-bytes0)*8/secs/1e4) / 100,
		"latency_s": dist(lat), "viewer_latency_p50_s": dist(vLat), "play_latency_s": dist(playLat),
		"stalls": map[string]any{"viewers_with_stalls": stalled, "total": stallsTotal, "stall_ms_per_viewer": dist(stallMs)},
		"errors": errorsTotal, "error_kinds": kinds, "renditions": renditions, "switches": switches,
		"cpu_cores_used": math.Round(steadyCPU/secs*100) / 100, "cpu_s_total": math.Round((cpuSeconds()-cpu0)*100) / 100,
		"gomaxprocs": runtime.GOMAXPROCS(0), "wall_s": math.Round(end.Sub(start).Seconds()*10) / 10,
	}
	if cfg.perFile != "" {
		if fh, err := os.Create(cfg.perFile); err == nil {
			enc := json.NewEncoder(fh)
			for _, r := range per {
				_ = enc.Encode(r)
			}
			fh.Close()
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}
