package server

import (
	"html/template"
	"net/http"
)

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>Merlin</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}.err{color:#b00;white-space:pre-wrap;font-family:monospace}.ok{color:#070}.fail{color:#b00}
code{background:#f4f4f4;padding:1px 4px}
</style></head><body>
<h1>Merlin</h1>
<p>{{len .Models}} models · <a href="/api/v1/models">/api/v1/models</a> · <a href="/api/v1/repos">/api/v1/repos</a> · <a href="/metrics">/metrics</a> · {{.Version}}</p>
{{range .Repos}}{{if or .Error .FileErrors .StateError (and .Git .Git.LastError)}}<table><tr><th>repository <b>{{.Repo}}</b>{{with .SHA}} <small>at {{printf "%.12s" .}}</small>{{end}}</th></tr>
{{if .Error}}<tr><td class="err">{{.Error}}</td></tr>{{end}}
{{with .Git}}{{if .LastError}}<tr><td class="err">git: {{.LastError}}</td></tr>{{end}}{{end}}
{{if .StateError}}<tr><td class="err">state not saved: {{.StateError}}</td></tr>{{end}}
{{range $file, $msg := .FileErrors}}<tr><td><small>{{$file}}</small><div class="err">{{$msg}}</div></td></tr>{{end}}
</table>{{end}}{{end}}
<table><tr><th>model</th><th>phase</th><th>versions</th><th>last analysis</th><th>commit</th></tr>
{{range .Models}}<tr>
<td><b>{{.Name}}</b><br><small>{{.File}}</small></td>
<td>{{.Phase}}{{if .Steps}} {{.Step}}/{{.Steps}}{{end}}{{if .Paused}} (paused){{end}}<br><small>{{.Reason}}</small></td>
<td>{{range .Versions}}<code>{{.Version}}</code> {{.Role}} {{.Weight}}% {{.State}}{{if .LastError}} <span class="err">{{.LastError}}</span>{{end}}<br>{{end}}</td>
<td>{{with .Analysis}}<span class="{{if eq .Verdict "fail"}}fail{{else}}ok{{end}}">{{.Verdict}}</span>: {{.Summary}}{{end}}</td>
<td><small>{{printf "%.12s" .Commit}}</small></td>
</tr>{{if .LastError}}<tr><td colspan="5" class="err">{{.LastError}}</td></tr>{{end}}
{{end}}</table>
</body></html>
`))

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = pageTmpl.Execute(w, map[string]any{"Models": s.Models(), "Repos": s.repos(), "Version": s.opts.Version})
}
