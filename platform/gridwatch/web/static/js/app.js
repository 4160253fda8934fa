// GridWatch pages work without scripts; this file only adds conveniences (and is the one
// place scripts come from: the Content Security Policy forbids inline code).
"use strict";
document.documentElement.classList.add("js");
