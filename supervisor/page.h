/* page.h: what the status page (statuspage.c) and the dead-letter page (dlqpage.c) share: the
 * start of their style sheet, a string literal spliced into each page's literal at compile
 * time, so that the pages look alike and stay so. Like the pages, written without double
 * quotes and backslashes. */
#ifndef SF_PAGE_H
#define SF_PAGE_H

/* After the page's <title>: the viewport, no favicon request, and the frame (body, header bar,
 * headings, main). The page goes on with its own rules and closes the <style>. */
#define PAGE_HEAD_STYLE \
"<meta name='viewport' content='width=device-width,initial-scale=1'>\n" \
"<link rel='icon' href='data:,'>\n" \
"<style>\n" \
"body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}\n" \
"header{background:#fff;border-bottom:1px solid #d8dee4;padding:10px 20px;display:flex;flex-wrap:wrap;gap:6px 18px;align-items:center}\n" \
"h1{font-size:18px;margin:0}h2{font-size:15px;margin:22px 0 8px}\n" \
"main{padding:6px 20px 24px}\n"

#endif
