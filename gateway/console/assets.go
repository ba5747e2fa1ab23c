package console

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"sort"
	"strconv"
	"strings"
)

// The console is plain ES modules and CSS, embedded as written: the gateway is often
// offline, and the Go build must not need npm.
//
//go:embed ui
var uiFiles embed.FS

type asset struct {
	body  []byte
	gz    []byte // nil when gzip does not make it smaller
	ctype string
	etag  string
}

// assetHandler serves the console. Assets live under /assets/{version}/ where version
// is a hash of every file, so they can be cached forever; index.html, which names the
// version, is revalidated on every load.
type assetHandler struct {
	version string
	index   *asset
	files   map[string]*asset
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// Handler serves the console UI at / (index.html) and /assets/...; mount it as the
// catch-all of the console listener, beside /api/ and /metrics. The assets are
// compressed once, here.
func Handler() http.Handler {
	h, err := newAssetHandler(uiFiles, "ui")
	if err != nil {
		// The files are compiled in; failing here is a build defect, not a runtime state.
		panic(fmt.Sprintf("console assets: %v", err))
	}
	return h
}

func newAssetHandler(fsys fs.FS, dir string) (*assetHandler, error) {
	raw := map[string][]byte{}
	err := fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		raw[strings.TrimPrefix(p, dir+"/")] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	if _, ok := raw["index.html"]; !ok {
		return nil, fmt.Errorf("no index.html in %s", dir)
	}

	names := make([]string, 0, len(raw))
	for n := range raw {
		names = append(names, n)
	}
	sort.Strings(names)
	sum := sha256.New()
	for _, n := range names {
		fmt.Fprintf(sum, "%s\x00%d\x00", n, len(raw[n]))
		sum.Write(raw[n])
	}
	h := &assetHandler{version: hex.EncodeToString(sum.Sum(nil))[:12], files: map[string]*asset{}}

	for _, n := range names {
		ctype, ok := contentTypes[path.Ext(n)]
		if !ok {
			return nil, fmt.Errorf("asset %s: no content type for its extension", n)
		}
		body := raw[n]
		if n == "index.html" {
			body = bytes.ReplaceAll(body, []byte(`"./assets/`), []byte(`"./assets/`+h.version+`/`))
		}
		a, err := newAsset(body, ctype)
		if err != nil {
			return nil, fmt.Errorf("asset %s: %w", n, err)
		}
		if n == "index.html" {
			h.index = a
		} else {
			h.files[n] = a
		}
	}
	return h, nil
}

func newAsset(body []byte, ctype string) (*asset, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(body); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	a := &asset{body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	if buf.Len() < len(body) {
		a.gz = buf.Bytes()
	}
	return a, nil
}

// The policy allows nothing from elsewhere: no CDN, no inline script, and no framing of
// the deploy button by another site.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"

func (h *assetHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	p := r.URL.Path
	switch {
	case p == "/" || p == "/index.html":
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Content-Security-Policy", contentSecurityPolicy)
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.serve(w, r, h.index)
	case strings.HasPrefix(p, "/assets/"):
		version, name, _ := strings.Cut(strings.TrimPrefix(p, "/assets/"), "/")
		a, ok := h.files[name]
		if !ok {
			writeError(w, http.StatusNotFound, "not found")
			return
		}
		if version == h.version {
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			// A page from before an upgrade: serve the current file, but do not let
			// it be cached under the old version's name.
			w.Header().Set("Cache-Control", "no-cache")
		}
		h.serve(w, r, a)
	default:
		writeError(w, http.StatusNotFound, "not found")
	}
}

func (h *assetHandler) serve(w http.ResponseWriter, r *http.Request, a *asset) {
	hd := w.Header()
	hd.Set("Content-Type", a.ctype)
	hd.Set("ETag", a.etag)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Vary", "Accept-Encoding")
	if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, a.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := a.body
	if a.gz != nil && acceptsGzip(r.Header.Get("Accept-Encoding")) {
		hd.Set("Content-Encoding", "gzip")
		body = a.gz
	}
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			return strings.ReplaceAll(strings.TrimSpace(params), " ", "") != "q=0"
		}
	}
	return false
}
