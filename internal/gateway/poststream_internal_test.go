package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/testenv"
)

// sseData is the data of each event of an event stream, compacted.
func sseData(t *testing.T, body io.Reader) []string {
	t.Helper()
	var out []string
	var data bytes.Buffer
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "data: "):
			data.WriteString(strings.TrimPrefix(line, "data: "))
			data.WriteByte('\n')
		case line == "" && data.Len() > 0:
			var c bytes.Buffer
			if err := json.Compact(&c, data.Bytes()); err != nil {
				t.Fatalf("an event that is not JSON: %q", data.String())
			}
			out = append(out, c.String())
			data.Reset()
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPostStream: what an agent's POST gets through a postStream, served by
// a real HTTP server, for what a call's progress and the SDK's answer do;
// the server logs nothing (a second WriteHeader would be "superfluous").
func TestPostStream(t *testing.T) {
	const note = `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}`
	// sdk answers as the SDK does: a JSON body under status.
	sdk := func(status int, body string) func(*postStream) {
		return func(p *postStream) {
			p.Header().Set("Content-Type", "application/json")
			p.WriteHeader(status)
			_, _ = p.Write([]byte(body))
		}
	}
	for _, tc := range []struct {
		name   string
		flush  bool // the SDK flushes before anything is written
		notify bool // the call has progress before the answer
		answer func(*postStream)
		// what the agent gets
		status      int
		contentType string
		events      []string // when an event stream
		body        string   // otherwise
	}{
		{
			name: "a flush before anything is written commits no header", flush: true, notify: true,
			answer: sdk(http.StatusOK, `{"jsonrpc":"2.0","id":1,"result":{}}`),
			status: http.StatusOK, contentType: "text/event-stream",
			events: []string{note, `{"jsonrpc":"2.0","id":1,"result":{}}`},
		},
		{
			name: "a batch answer is one event a message", notify: true,
			answer: sdk(http.StatusOK, `[{"jsonrpc":"2.0","id":1,"result":{}}, {"jsonrpc":"2.0","id":2,"result":{}}]`),
			status: http.StatusOK, contentType: "text/event-stream",
			events: []string{note, `{"jsonrpc":"2.0","id":1,"result":{}}`, `{"jsonrpc":"2.0","id":2,"result":{}}`},
		},
		{
			name: "an answer after the stream began keeps its status 200", notify: true,
			answer: sdk(http.StatusBadRequest, `{"jsonrpc":"2.0","id":1,"error":{"code":-32600,"message":"no"}}`),
			status: http.StatusOK, contentType: "text/event-stream",
			events: []string{note, `{"jsonrpc":"2.0","id":1,"error":{"code":-32600,"message":"no"}}`},
		},
		{
			name: "without progress the JSON answer passes as it is", flush: true,
			answer: sdk(http.StatusOK, `{"jsonrpc":"2.0","id":1,"result":{}}`),
			status: http.StatusOK, contentType: "application/json",
			body: `{"jsonrpc":"2.0","id":1,"result":{}}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				p := &postStream{w: w}
				if tc.flush {
					p.Flush()
				}
				if tc.notify {
					if err := p.notify([]byte(note)); err != nil {
						t.Errorf("notify: %v", err)
					}
				}
				tc.answer(p)
				p.finish()
			}))
			var errLog testenv.SyncBuffer // the server's error log
			srv.Config.ErrorLog = log.New(&errLog, "", 0)
			srv.Start()
			defer srv.Close()
			resp, err := http.Post(srv.URL, "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if ct := resp.Header.Get("Content-Type"); ct != tc.contentType {
				t.Errorf("Content-Type %q, want %q", ct, tc.contentType)
			}
			if tc.events != nil {
				if got := sseData(t, resp.Body); !slices.Equal(got, tc.events) {
					t.Errorf("events\n%q\nwant\n%q", got, tc.events)
				}
			} else {
				b, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				if string(b) != tc.body {
					t.Errorf("body %q, want %q", b, tc.body)
				}
			}
			if l := errLog.String(); l != "" {
				t.Errorf("the server logged %q", l)
			}
		})
	}
}
