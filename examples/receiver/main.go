// Command receiver is the smallest cloud end for a Moongate HTTP sink: it takes the
// batches the sink POSTs and prints each record, so that the quickstart shows the cloud
// path end to end on a laptop with nothing else installed (`make run` starts it).
//
//	receiver -listen 127.0.0.1:8090     # the sink posts to http://127.0.0.1:8090/ingest
//
// It answers 200 to every well-formed batch. Delivery is at least once: a batch that comes
// again (after a lost answer, say) has the same Idempotency-Key, which it prints.
package main

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "address to listen on; the sink's url is http://ADDR/ingest")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		logger.Error("receiver: listen", "err", err)
		os.Exit(1)
	}
	logger.Info("receiver listening", "url", "http://"+ln.Addr().String()+"/ingest")
	if err := serve(ctx, ln, os.Stdout); err != nil {
		logger.Error("receiver failed", "err", err)
		os.Exit(1)
	}
}

// serve answers on ln until ctx ends.
func serve(ctx context.Context, ln net.Listener, out io.Writer) error {
	srv := &http.Server{Handler: handler(out), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	err := srv.Serve(ln)
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// batch is what a Moongate HTTP sink posts (README, "Sending results to the cloud").
type batch struct {
	Gateway string `json:"gateway"`
	Stream  string `json:"stream"`
	Records []struct {
		ID       string          `json:"id"`
		Seq      uint64          `json:"seq"`
		TS       int64           `json:"ts"`
		Function string          `json:"function"`
		Data     json.RawMessage `json:"data"`
	} `json:"records"`
}

// handler prints every batch POSTed to /ingest, one line for the batch and one per record.
func handler(out io.Writer) http.Handler {
	var mu sync.Mutex // one batch's lines stay together
	mux := http.NewServeMux()
	mux.HandleFunc("POST /ingest", func(w http.ResponseWriter, r *http.Request) {
		body := io.Reader(http.MaxBytesReader(w, r.Body, 64<<20))
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(body)
			if err != nil {
				http.Error(w, "bad gzip body: "+err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		var b batch
		if err := json.NewDecoder(body).Decode(&b); err != nil {
			http.Error(w, "not a batch: "+err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		fmt.Fprintf(out, "batch gateway=%s stream=%s records=%d key=%s\n", b.Gateway, b.Stream, len(b.Records), r.Header.Get("Idempotency-Key"))
		for _, rec := range b.Records {
			fmt.Fprintf(out, "  seq=%d function=%s %s\n", rec.Seq, rec.Function, rec.Data)
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "{}")
	})
	return mux
}
