package static

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()

	for _, tc := range []struct{ path, ctype, contains string }{
		{"/", "text/html", `<script type="module" src="app.js">`},
		{"/app.js", "text/javascript", "VideoChatClient"},
		{"/protocol.js", "text/javascript", "export class VideoChatClient"},
		{"/session.js", "text/javascript", "export const sessionMethods"},
		{"/peer.js", "text/javascript", "export const peerMethods"},
		{"/stats.js", "text/javascript", "export class StatsSampler"},
		{"/media.js", "text/javascript", "export async function openMedia"},
		{"/ringer.js", "text/javascript", "export class Ringer"},
		{"/devices.js", "text/javascript", "export class DevicePicker"},
		{"/style.css", "text/css", "#local-video"},
	} {
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d", tc.path, resp.StatusCode)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
			t.Errorf("%s: Content-Type %q, want %s", tc.path, ct, tc.ctype)
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("%s: Cache-Control %q", tc.path, cc)
		}
		if !strings.Contains(string(body), tc.contains) {
			t.Errorf("%s: body lacks %q", tc.path, tc.contains)
		}
	}

	resp, err := http.Get(srv.URL + "/embed.go")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/embed.go: status %d, want 404", resp.StatusCode)
	}
}
