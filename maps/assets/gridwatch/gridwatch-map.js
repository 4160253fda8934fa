/* GridWatch map helpers, loaded by every map document (gridwatch.maps).
 *
 * Tooltips and legends are built as DOM nodes with textContent, never from HTML strings, so
 * area names and other user text cannot inject markup. Colours are set through the CSSOM
 * (element.style), which the Content Security Policy allows, not through style attributes.
 */
(function () {
  'use strict';

  function format(value) {
    if (value === null || value === undefined || value === '') {
      return '—';
    }
    if (typeof value === 'number') {
      return (Math.round(value * 100) / 100).toLocaleString();
    }
    return String(value);
  }

  function infoTable(fields, properties) {
    var table = document.createElement('table');
    table.className = 'gw-info';
    fields.forEach(function (field) {
      var row = table.insertRow();
      var head = document.createElement('th');
      head.textContent = field[1];
      row.appendChild(head);
      var value = properties[field[0]];
      if (field.length > 2 && field[2] && value !== null && value !== undefined) {
        value = field[2][value] !== undefined ? field[2][value] : value;
      }
      row.insertCell().textContent = format(value);
    });
    return table;
  }

  window.GridWatchMap = {
    /* Style function: feature.properties[key] indexes ``styles`` (0 when absent). */
    style: function (styles, key) {
      return function (feature) {
        var index = feature.properties && feature.properties[key];
        return styles[index] || styles[0];
      };
    },

    /* A GeoJSON layer whose features are fetched from ``url`` when it is first shown. */
    lazyGeoJson: function (url, options) {
      var layer = L.geoJson(null, options);
      var requested = false;
      layer.on('add', function () {
        if (requested) {
          return;
        }
        requested = true;
        fetch(url, {credentials: 'same-origin', headers: {Accept: 'application/json'}})
          .then(function (response) {
            if (!response.ok) {
              throw new Error(url + ': ' + response.status);
            }
            return response.json();
          })
          .then(function (data) {
            layer.addData(data);
            layer.fire('gw:loaded');
          })
          .catch(function (error) {
            requested = false;
            window.console.error(error);
          });
      });
      return layer;
    },

    /* onEachFeature: a sticky tooltip listing ``fields`` ([key, label, {code: text}?]). */
    info: function (fields) {
      return function (feature, layer) {
        var properties = feature.properties || {};
        layer.bindTooltip(function () {
          return infoTable(fields, properties);
        }, {sticky: true, className: 'gw-tooltip'});
      };
    },

    /* A legend shown while ``layer`` is on the map. spec: {title, items: [[colour, text]]}. */
    legend: function (map, layer, spec) {
      var control = L.control({position: 'bottomleft'});
      control.onAdd = function () {
        var box = L.DomUtil.create('div', 'gw-legend');
        var title = L.DomUtil.create('div', 'gw-legend-title', box);
        title.textContent = spec.title;
        spec.items.forEach(function (item) {
          var line = L.DomUtil.create('div', 'gw-legend-item', box);
          var swatch = L.DomUtil.create('span', 'gw-swatch', line);
          swatch.style.background = item[0];
          var text = L.DomUtil.create('span', 'gw-legend-text', line);
          text.textContent = item[1];
        });
        return box;
      };
      var shown = false;
      function sync() {
        var want = map.hasLayer(layer);
        if (want && !shown) {
          control.addTo(map);
        } else if (!want && shown) {
          control.remove();
        }
        shown = want;
      }
      map.on('overlayadd overlayremove', sync);
      sync();
    },

    /* Marks the document once every layer is drawn (browser tests wait for it). */
    ready: function (map) {
      map.whenReady(function () {
        document.body.setAttribute('data-map-ready', '1');
      });
    }
  };
}());
