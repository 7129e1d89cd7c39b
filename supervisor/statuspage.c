/* statuspage.c: the page served at GET /: one self-contained HTML document (no external
 * scripts, fonts or stylesheets, so it works offline) that refreshes itself from
 * /status.json. */
const char status_page_html[] =
"<!doctype html>\n"
"<html lang=\"en\"><head><meta charset=\"utf-8\"><title>streamfleet</title>\n"
"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
"<style>body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}"
"table{border-collapse:collapse}td,th{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:right}"
"th:first-child,td:first-child{text-align:left}.bad{color:#b00}.ok{color:#070}</style></head>\n"
"<body><h1>streamfleet <span id=\"status\"></span></h1>\n"
"<p id=\"redis\"></p>\n"
"<table><thead><tr><th>pool</th><th>workers</th><th>msgs/s</th><th>pending</th><th>lag</th>"
"<th>oldest pending</th><th>dead letters</th></tr></thead><tbody id=\"pools\"></tbody></table>\n"
"<script>\n"
"function cell(t){var td=document.createElement('td');td.textContent=t;return td}\n"
"function refresh(){fetch('status.json',{cache:'no-store'}).then(function(r){return r.json()}).then(function(s){\n"
"document.getElementById('status').textContent=s.status;\n"
"document.getElementById('status').className=s.status=='ok'?'ok':'bad';\n"
"document.getElementById('redis').textContent='redis '+(s.redis.up?'up':'down: '+(s.redis.error||''));\n"
"var tb=document.getElementById('pools');tb.textContent='';\n"
"s.pools.forEach(function(p){var tr=document.createElement('tr');\n"
"[p.name,p.workers.running+'/'+p.workers.expected,p.rate.toFixed(1),p.pending,p.lag,"
"p.oldest_pending_age==null?'-':p.oldest_pending_age.toFixed(1)+' s',p.dlq_length].forEach(function(v){"
"tr.appendChild(cell(v==null?'-':String(v)))});tb.appendChild(tr)})})}\n"
"refresh();setInterval(refresh,2000);\n"
"</script></body></html>\n";
