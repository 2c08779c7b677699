package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// hclient is one keep-alive HTTP/1.1 connection used by one goroutine at a time: the request is written
// and the response read on the caller's goroutine, with no pool and no hand-off between goroutines, so a
// request costs a write and a read. (net/http's Transport costs several times more per request here,
// which is what decides whether one core can hold 2,000 LL-HLS viewers.) Answers are read by
// Content-Length or chunked transfer coding.
type hclient struct {
	host string
	c    net.Conn
	br   *bufio.Reader
	req  []byte
}

var errProto = errors.New("malformed response")

func split(u string) (string, string) {
	rest := strings.TrimPrefix(u, "http://")
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[:i], rest[i:]
	}
	return rest, "/"
}

func (h *hclient) close() {
	if h.c != nil {
		h.c.Close()
		h.c = nil
	}
}

func (h *hclient) dial(ctx context.Context, host string) error {
	h.close()
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return err
	}
	h.c, h.host = c, host
	if h.br == nil {
		h.br = bufio.NewReaderSize(c, 32<<10)
	} else {
		h.br.Reset(c)
	}
	return nil
}

// get fetches u (http://host/path?query); keep returns the body, else it is only counted.
func (h *hclient) get(ctx context.Context, u string, keep bool) fetched {
	host, target := split(u)
	requests.Add(1)
	f, err := h.do(ctx, host, target, keep)
	if err != nil && ctx.Err() == nil && h.c == nil { // a kept-alive connection the server closed: once more
		f, err = h.do(ctx, host, target, keep)
	}
	f.err = err
	if err != nil {
		h.close()
		if ctx.Err() == nil {
			countErr("transport")
		}
		return f
	}
	bytesIn.Add(f.size)
	if f.status >= 400 && ctx.Err() == nil {
		countErr("http_" + strconv.Itoa(f.status))
	}
	return f
}

func (h *hclient) do(ctx context.Context, host, target string, keep bool) (fetched, error) {
	var f fetched
	if h.c == nil || h.host != host {
		if err := h.dial(ctx, host); err != nil {
			return f, err
		}
	}
	c := h.c
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	_ = h.c.SetDeadline(time.Now().Add(45 * time.Second))
	h.req = append(h.req[:0], "GET "...)
	h.req = append(h.req, target...)
	h.req = append(h.req, " HTTP/1.1\r\nHost: "...)
	h.req = append(h.req, host...)
	h.req = append(h.req, "\r\n\r\n"...)
	if _, err := h.c.Write(h.req); err != nil {
		h.close() // a kept-alive connection the server had closed: the caller tries once more
		return f, err
	}
	line, err := h.br.ReadSlice('\n')
	if err != nil {
		h.close()
		return f, err
	}
	t0 := time.Now()
	if len(line) < 12 || string(line[:5]) != "HTTP/" {
		return f, errProto
	}
	f.status, _ = strconv.Atoi(string(line[9:12]))
	length, chunked, closeAfter := int64(-1), false, false
	for {
		hl, err := h.br.ReadSlice('\n')
		if err != nil {
			return f, err
		}
		if len(hl) <= 2 {
			break
		}
		k, v, _ := strings.Cut(string(hl), ":")
		v = strings.TrimSpace(v)
		switch strings.ToLower(k) {
		case "content-length":
			length, _ = strconv.ParseInt(v, 10, 64)
		case "transfer-encoding":
			chunked = strings.Contains(strings.ToLower(v), "chunked")
		case "connection":
			closeAfter = strings.EqualFold(v, "close")
		}
	}
	var body []byte
	var sink io.Writer = io.Discard
	var buf *bodyBuf
	if keep {
		buf = &bodyBuf{}
		sink = buf
	}
	switch {
	case chunked:
		for {
			sl, err := h.br.ReadSlice('\n')
			if err != nil {
				return f, err
			}
			size, err := strconv.ParseInt(strings.TrimSpace(strings.SplitN(string(sl), ";", 2)[0]), 16, 64)
			if err != nil {
				return f, errProto
			}
			if size == 0 {
				if _, err := h.br.ReadSlice('\n'); err != nil {
					return f, err
				}
				break
			}
			n, err := io.CopyN(sink, h.br, size)
			f.size += n
			if err != nil {
				return f, err
			}
			if _, err := h.br.Discard(2); err != nil {
				return f, err
			}
		}
	case length >= 0:
		n, err := io.CopyN(sink, h.br, length)
		f.size = n
		if err != nil {
			return f, err
		}
	default: // until the server closes
		n, err := io.Copy(sink, h.br)
		f.size = n
		closeAfter = true
		if err != nil {
			return f, err
		}
	}
	if buf != nil {
		body = buf.b
	}
	f.body = body
	f.transfer = time.Since(t0)
	if closeAfter {
		h.close()
	}
	return f, nil
}

type bodyBuf struct{ b []byte }

func (w *bodyBuf) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}
