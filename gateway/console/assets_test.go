package console

import (
	"compress/gzip"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// assetRef finds what index.html loads: ./assets/<version>/<file>.
var assetRef = regexp.MustCompile(`"\./assets/([0-9a-f]{12})/([a-z]+\.(?:js|css|svg))"`)

func TestHandlerServesVersionedGzippedAssets(t *testing.T) {
	h := Handler()
	idx := get(t, h, "/", map[string]string{"Accept-Encoding": "gzip"})
	if idx.Code != 200 || idx.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("index: %d, encoding %q", idx.Code, idx.Header().Get("Content-Encoding"))
	}
	if cc := idx.Header().Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("index Cache-Control %q", cc)
	}
	if csp := idx.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("index CSP %q", csp)
	}
	zr, err := gzip.NewReader(idx.Body)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(zr)
	refs := assetRef.FindAllStringSubmatch(string(page), -1)
	if len(refs) < 3 {
		t.Fatalf("index references %d versioned assets: %s", len(refs), page)
	}

	seen := map[string]bool{}
	for _, ref := range refs {
		seen[ref[2]] = true
		w := get(t, h, "/assets/"+ref[1]+"/"+ref[2], map[string]string{"Accept-Encoding": "gzip, deflate, br"})
		if w.Code != 200 {
			t.Fatalf("%s: %d", ref[2], w.Code)
		}
		if cc := w.Header().Get("Cache-Control"); !strings.Contains(cc, "immutable") {
			t.Errorf("%s Cache-Control %q", ref[2], cc)
		}
	}

	// Page weight: a first visit loads every file (index.html preloads each module).
	weight := idx.Body.Len()
	for name, a := range h.(*assetHandler).files {
		if !seen[name] {
			t.Errorf("%s is embedded but index.html does not load or preload it", name)
		}
		if a.gz != nil {
			weight += len(a.gz)
		} else {
			weight += len(a.body)
		}
	}
	t.Logf("page weight: %d bytes gzipped, %d files", weight, len(seen)+1)
	if weight > 300<<10 {
		t.Errorf("console weighs %d bytes gzipped, the target is under 300 KiB", weight)
	}
}

func TestHandlerCachingAndErrors(t *testing.T) {
	h := Handler().(*assetHandler)
	w := get(t, h, "/assets/"+h.version+"/app.js", nil)
	if w.Code != 200 || w.Header().Get("Content-Encoding") != "" || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/javascript") {
		t.Fatalf("plain app.js: %d %v", w.Code, w.Header())
	}
	etag := w.Header().Get("ETag")
	if w := get(t, h, "/assets/"+h.version+"/app.js", map[string]string{"If-None-Match": etag}); w.Code != http.StatusNotModified {
		t.Errorf("revalidation: %d, want 304", w.Code)
	}
	if w := get(t, h, "/assets/0123456789ab/app.js", nil); w.Code != 200 || w.Header().Get("Cache-Control") != "no-cache" {
		t.Errorf("old version: %d, Cache-Control %q", w.Code, w.Header().Get("Cache-Control"))
	}
	if w := get(t, h, "/assets/"+h.version+"/nope.js", nil); w.Code != 404 {
		t.Errorf("unknown asset: %d", w.Code)
	}
	if w := get(t, h, "/", map[string]string{"Accept-Encoding": "gzip;q=0"}); w.Header().Get("Content-Encoding") != "" {
		t.Errorf("gzip sent although refused")
	}
	if w := get(t, h, "/nope", nil); w.Code != 404 || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("unknown path: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d", rec.Code)
	}
}

// The gateway is often offline: nothing in the console may load from elsewhere.
func TestAssetsAreSelfContained(t *testing.T) {
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	err := fs.WalkDir(uiFiles, "ui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(uiFiles, p)
		if err != nil {
			return err
		}
		for _, m := range external.FindAllString(string(b), -1) {
			if m == "http://www.w3.org" { // the SVG namespace name, never fetched
				continue
			}
			t.Errorf("%s refers to %s", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
