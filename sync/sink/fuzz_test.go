package sink

import (
	"bufio"
	"bytes"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

func FuzzParseCommands(f *testing.F) {
	for _, s := range []string{
		``, `ok`, `{}`, `{"commands":[]}`, `{"commands":null}`,
		`{"commands":[{"topic":"a/b","payload":{"x":1}}]}`,
		`{"commands":[{"topic":"a","payload":"text","qos":0,"retain":true}]}`,
		`{"commands":[{"topic":"a/#","payload":1},{"topic":"","payload":2},{"topic":"b","qos":7}]}`,
		`{"commands":[{"topic":"a","payload":"\ud800"}]}`,
		`{"commands":{"topic":"a"}}`, `{"commands":[1,2]}`, `[{"topic":"a"}]`, `{"commands":[{"topic":"a\u0000b"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		cmds, _ := parseCommands(body)
		for _, c := range cmds {
			if checkTopic(c.Topic) != nil || c.QoS > 1 {
				t.Fatalf("invalid command returned: %+v", c)
			}
		}
	})
}

func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "120", "-1", "1e3", "Thu, 02 Jan 2025 03:04:35 GMT", "Thursday, 02-Jan-25 03:05:05 GMT", "Thu Jan  2 03:04:35 2025", "99999999999999999999999"} {
		f.Add(s)
	}
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		if d := retryAfter(v, now); d < 0 || d > maxRetryAfter {
			t.Fatalf("retryAfter(%q) = %v", v, d)
		}
	})
}

// FuzzClassifyResponse feeds arbitrary bytes as a receiver's response: the
// sink must neither panic nor acknowledge anything but a 2xx.
func FuzzClassifyResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 200 OK\r\nContent-Length: 60\r\n\r\n{\"commands\":[{\"topic\":\"a\",\"payload\":\"b\"}]}          ",
		"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 503 Service Unavailable\r\nRetry-After: Thu, 02 Jan 2025 03:04:35 GMT\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		"HTTP/1.1 415 Unsupported Media Type\r\nAccept-Encoding: gzip\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\nno",
		"HTTP/1.0 302 Found\r\nLocation: /x\r\n\r\n",
		"garbage\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	tr, err := newHTTPTransport(&HTTPConfig{URL: "http://127.0.0.1/x", Timeout: time.Second, Gzip: "auto"}, "gw", time.Now)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		budget := &budgetReader{r: bytes.NewReader(raw), left: math.MaxInt64}
		p := &httpPipe{t: tr, budget: budget, br: bufio.NewReader(budget)}
		req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1/x", strings.NewReader("{}"))
		res, _, err := p.read(&inflight{req: req, gz: true})
		if err != nil {
			return
		}
		if res.outcome == delivered && !bytes.Contains(raw, []byte(" 2")) {
			t.Fatalf("acknowledged without a 2xx: %q", raw)
		}
		if res.retryAfter < 0 || res.retryAfter > maxRetryAfter {
			t.Fatalf("retry after %v", res.retryAfter)
		}
	})
}
