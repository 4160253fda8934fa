/* The route sheet's print button (no inline handlers: the CSP allows none). */
(function () {
  'use strict';
  var button = document.getElementById('print-sheet');
  if (button) {
    button.addEventListener('click', function () { window.print(); });
  }
}());
