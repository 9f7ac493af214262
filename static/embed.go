// Package static holds the browser app (HTML, CSS and ES modules), embedded
// into the binary.
package static

import (
	"embed"
	"net/http"
)

//go:embed index.html style.css diag.html *.js
var assets embed.FS

// Handler serves the browser app; "/" serves index.html. Mount it at the
// site root (or behind http.StripPrefix).
func Handler() http.Handler {
	files := http.FileServerFS(assets)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
}
