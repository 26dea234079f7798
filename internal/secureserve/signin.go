package secureserve

import (
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// CookieName is the cookie that keeps a signed-in browser's token.
const CookieName = "lanmonitor-token"

// cookieLifetime bounds how long a browser keeps the token (the token's
// own expiry, checked by every TokenReview, may be shorter).
const cookieLifetime = 12 * time.Hour

// maxTokenBytes bounds the form: service account tokens are about 1 KiB.
const maxTokenBytes = 16 << 10

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lanmonitor: sign in</title>
<link rel="icon" href="ui/favicon.svg">
<link rel="stylesheet" href="ui/style.css">
</head>
<body>
<main class="login">
<h1>lanmonitor</h1>
<form method="post" action="login">
<p><label for="token">Bearer token</label></p>
<p><textarea id="token" name="token" rows="6" cols="60" required autofocus spellcheck="false" autocomplete="off"></textarea></p>
{{if .Message}}<p class="warn" role="alert" id="login-message">{{.Message}}</p>{{end}}
<p><button type="submit">Sign in</button></p>
</form>
<p>A token of a user or service account that may read this dashboard, for example:</p>
<pre>{{.Hint}}</pre>
</main>
</body>
</html>
`))

// Hint is the command the sign-in form suggests for getting a token; the
// program sets it (the chart's service account, or the standalone token file).
var Hint = "kubectl create token <service-account> -n <namespace>"

func (g *Guard) login(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: with no-referrer a browser posts the
	// form with "Origin: null", which the check below must refuse.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	show := func(status int, msg string) {
		h.Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		loginPage.Execute(w, struct{ Message, Hint string }{msg, Hint})
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		msg := ""
		switch {
		case r.URL.Query().Has("forbidden"):
			msg = "This token may not read the dashboard: sign in with another one."
		case r.URL.Query().Has("expired"):
			msg = "The token is no longer valid: sign in again."
		}
		show(http.StatusOK, msg)
	case http.MethodPost:
		// A form posted from another site is refused (login CSRF): by the
		// browser's Sec-Fetch-Site, else its Origin.
		if !sameOrigin(r) {
			show(http.StatusForbidden, "Refused: the form was posted from another origin.")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxTokenBytes)
		if err := r.ParseForm(); err != nil {
			show(http.StatusBadRequest, "The form could not be read: "+err.Error())
			return
		}
		token := strings.TrimSpace(r.PostForm.Get("token"))
		token = strings.TrimPrefix(token, "Bearer ")
		if token == "" {
			show(http.StatusBadRequest, "Paste a token.")
			return
		}
		// Check the token as the page's own request would be.
		probe, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, "/", nil)
		probe.Header.Set("Authorization", "Bearer "+token)
		switch d, name := g.check(probe); d {
		case allowed:
			http.SetCookie(w, &http.Cookie{Name: CookieName, Value: token, Path: "/", MaxAge: int(cookieLifetime.Seconds()),
				HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
			http.Redirect(w, r, "./", http.StatusSeeOther)
		case unauthenticated:
			show(http.StatusUnauthorized, "This token is not valid (or has expired).")
		case forbidden:
			show(http.StatusForbidden, "User "+name+" may not read this dashboard.")
		default:
			show(http.StatusInternalServerError, "The token could not be checked: is the API server reachable?")
		}
	default:
		h.Set("Allow", "GET, HEAD, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// sameOrigin reports whether r was sent by a page of this server (or by a
// client that is not a browser, which sends neither header): Sec-Fetch-Site
// (Fetch Metadata) same-origin or none, else an Origin whose host is r.Host.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return true
	case "":
	default:
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}
