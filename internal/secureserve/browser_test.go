package secureserve_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/go-logr/logr"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/lanmonitor/lanmonitor/internal/browsertest"
	"github.com/lanmonitor/lanmonitor/internal/secureserve"
	"github.com/lanmonitor/lanmonitor/internal/webui"
)

// TestSignInBrowser: Chromium opens a dashboard behind the guard, is sent
// to the sign-in form, signs in with a real token and gets the page, whose
// stream is then authorized by the cookie.
func TestSignInBrowser(t *testing.T) {
	g, err := secureserve.Kubernetes(env.Config, secureserve.Resource("lanmonitor.io", "lanmonitors", "list"), logr.Discard(), "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/history", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"events":[],"lastId":0}`)
	})
	mux.HandleFunc("GET /api/v1/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "retry: 1000\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	mux.Handle("/", webui.Cluster())
	srv := serveHandler(t, g, mux)
	token := env.Token(t, "browser-reader", rbacv1.PolicyRule{APIGroups: []string{"lanmonitor.io"}, Resources: []string{"lanmonitors"}, Verbs: []string{"list"}})

	b := browsertest.New(t)
	b.Navigate(srv.URL + "/")
	b.Wait(`location.pathname === "/login"`, 5e9)
	b.SignIn(srv.URL, token)
	b.WaitText("#conn", "live", 5e9)
}
