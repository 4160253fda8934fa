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

  /* Unpacks coordinates packed as integer deltas (gridwatch.maps.layers.delta_encode): a ring
   * [x0, y0, dx1, dy1, ...] in units of 10^-digits degrees becomes [[lon, lat], ...]. */
  function deltaDecode(data) {
    var digits = data && data.gw_delta;
    if (digits === undefined || digits === null) {
      return data;
    }
    var scale = Math.pow(10, digits);
    function ring(flat) {
      var points = [];
      var x = 0;
      var y = 0;
      for (var i = 0; i + 1 < flat.length; i += 2) {
        x += flat[i];
        y += flat[i + 1];
        points.push([x / scale, y / scale]);
      }
      return points;
    }
    data.features.forEach(function (feature) {
      var geometry = feature.geometry;
      if (!geometry) {
        return;
      }
      if (geometry.type === 'Polygon') {
        geometry.coordinates = geometry.coordinates.map(ring);
      } else if (geometry.type === 'MultiPolygon') {
        geometry.coordinates = geometry.coordinates.map(function (polygon) {
          return polygon.map(ring);
        });
      }
    });
    delete data.gw_delta;
    return data;
  }

  /* One request per URL however many layers draw its answer (the grid choropleth and the
   * patrol dosage share their polygons); a failed request is forgotten, so it is retried. */
  var fetched = {};
  function fetchJson(url) {
    if (!fetched[url]) {
      fetched[url] = fetch(url, {credentials: 'same-origin', headers: {Accept: 'application/json'}})
        .then(function (response) {
          if (!response.ok) {
            throw new Error(url + ': ' + response.status);
          }
          return response.json();
        })
        .then(deltaDecode)
        .catch(function (error) {
          delete fetched[url];
          throw error;
        });
    }
    return fetched[url];
  }

  /* Calls build(data) with the layer's data: at once when ``source`` is the data itself, else
   * fetched from the URL ``source`` the first time ``layer`` is added to a map. */
  function withData(layer, source, build) {
    if (typeof source !== 'string') {
      build(source);
      return;
    }
    var requested = false;
    layer.on('add', function () {
      if (requested) {
        return;
      }
      requested = true;
      fetchJson(source)
        .then(function (data) {
          build(data);
          layer.fire('gw:loaded');
        })
        .catch(function (error) {
          requested = false;
          window.console.error(error);
        });
    });
  }

  var METRES_PER_DEGREE = 111320;

  /* A camera's view as the cameras' coverage figures count it (workers/aggregate/coverage.py):
   * a sector of ``range`` metres and ``fov`` degrees around the compass bearing ``direction``,
   * or a full circle when the direction or the angle is unknown; an unknown range is
   * ``unknownRange``. */
  function cameraView(lat, lon, direction, fov, range, unknownRange, style) {
    var radius = range > 0 ? range : unknownRange;
    if (direction === null || fov === null || fov <= 0 || fov >= 360) {
      return L.circle([lat, lon], L.extend({radius: radius}, style));
    }
    var cosLat = Math.cos(lat * Math.PI / 180);
    var steps = Math.max(4, Math.ceil(fov / 10));
    var points = [[lat, lon]];
    for (var i = 0; i <= steps; i++) {
      var bearing = (direction - fov / 2 + fov * i / steps) * Math.PI / 180;
      points.push([
        lat + radius * Math.cos(bearing) / METRES_PER_DEGREE,
        lon + radius * Math.sin(bearing) / (METRES_PER_DEGREE * cosLat)
      ]);
    }
    return L.polygon(points, style);
  }

  /* A small round marker in the camera's status colour (set through the CSSOM). */
  var CameraIcon = L.DivIcon.extend({
    createIcon: function (oldIcon) {
      var div = L.DivIcon.prototype.createIcon.call(this, oldIcon);
      div.style.background = this.options.colour;
      return div;
    }
  });

  /* A cluster's icon: its count, on green when every camera in it works, on amber when some
   * do not, on red when a fifth or more do not. */
  function clusterIcon(cluster) {
    var markers = cluster.getAllChildMarkers();
    var notWorking = 0;
    for (var i = 0; i < markers.length; i++) {
      if (markers[i].options.gwStatus !== 0) {
        notWorking++;
      }
    }
    var share = markers.length ? notWorking / markers.length : 0;
    var level = share === 0 ? 'ok' : (share < 0.2 ? 'some' : 'many');
    var box = document.createElement('div');
    var count = document.createElement('span');
    count.textContent = String(cluster.getChildCount());
    box.appendChild(count);
    return L.divIcon({
      html: box,
      className: 'marker-cluster gw-cluster gw-cluster-' + level,
      iconSize: L.point(40, 40)
    });
  }

  function rowObject(columns, row) {
    var object = {};
    for (var i = 0; i < columns.length; i++) {
      object[columns[i]] = row[i];
    }
    return object;
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
        fetchJson(url)
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

    /* Cameras clustered by Leaflet.markercluster, coloured by status, with a text-only popup;
     * view sectors from zoom options.sectorMinZoom, for the cameras in view. ``source`` is a
     * camera payload (gridwatch.maps.cameras) or its URL. */
    cameras: function (map, source, options) {
      var group = L.layerGroup();
      var cluster = L.markerClusterGroup({
        chunkedLoading: true,
        showCoverageOnHover: false,
        maxClusterRadius: 45,
        disableClusteringAtZoom: options.sectorMinZoom,
        iconCreateFunction: clusterIcon
      });
      var sectors = L.layerGroup();
      group.addLayer(cluster);
      group.addLayer(sectors);
      var rows = [];
      var icons = options.colours.map(function (colour) {
        return new CameraIcon({className: 'gw-camera', iconSize: [12, 12], colour: colour});
      });

      function drawSectors() {
        sectors.clearLayers();
        if (!map.hasLayer(group) || map.getZoom() < options.sectorMinZoom) {
          return;
        }
        var bounds = map.getBounds().pad(0.25);
        var drawn = 0;
        for (var i = 0; i < rows.length && drawn < 3000; i++) {
          var row = rows[i];
          if (!bounds.contains([row[0], row[1]])) {
            continue;
          }
          var colour = options.colours[row[2]];
          sectors.addLayer(cameraView(row[0], row[1], row[3], row[4], row[5],
            options.unknownRange, {
              color: colour, weight: 1, opacity: 0.7, fillColor: colour, fillOpacity: 0.15,
              // A camera that does not work sees nothing now: its view is only outlined.
              dashArray: row[2] === 0 ? null : '4 3', interactive: false
            }));
          drawn++;
        }
      }

      withData(group, source, function (data) {
        var markers = [];
        rows = data.rows;
        rows.forEach(function (row) {
          var marker = L.marker([row[0], row[1]], {
            icon: icons[row[2]], keyboard: false, gwStatus: row[2]
          });
          marker.bindPopup(function () {
            var properties = rowObject(data.columns, row);
            properties.status = data.statuses[row[2]];
            return infoTable(options.fields, properties);
          }, {className: 'gw-popup'});
          markers.push(marker);
        });
        cluster.addLayers(markers);
        drawSectors();
      });
      group.on('add', function () {
        map.on('zoomend moveend', drawSectors);
        drawSectors();
      });
      group.on('remove', function () {
        map.off('zoomend moveend', drawSectors);
        sectors.clearLayers();
      });
      return group;
    },

    /* Patrol tracks as lines in each team's colour, a tooltip naming the team, and a legend
     * of the teams. ``source`` is a track payload (gridwatch.maps.tracks) or its URL. */
    tracks: function (map, source, labels) {
      var group = L.featureGroup();
      var fields = [['team', labels.team], ['code', labels.code], ['from', labels.from],
        ['to', labels.to]];
      withData(group, source, function (data) {
        data.tracks.forEach(function (track) {
          var team = data.teams[track[0]];
          var flat = track[3];
          var latlngs = [];
          for (var i = 0; i + 1 < flat.length; i += 2) {
            latlngs.push([flat[i], flat[i + 1]]);
          }
          var line = latlngs.length > 1
            ? L.polyline(latlngs, {color: team[2], weight: 3, opacity: 0.85})
            : L.circleMarker(latlngs[0], {radius: 3, color: team[2], weight: 2});
          var properties = {team: team[1], code: team[0], from: track[1], to: track[2]};
          line.bindTooltip(function () {
            return infoTable(fields, properties);
          }, {sticky: true, className: 'gw-tooltip'});
          group.addLayer(line);
        });
        window.GridWatchMap.legend(map, group, {
          title: labels.title,
          items: data.teams.map(function (team) { return [team[2], team[1]]; })
        });
      });
      return group;
    },

    /* Leaflet.heat over the weeks of ``source`` (gridwatch.maps.heat.weekly_heat_payload, or
     * its URL) with a slider and a play button, shown while the layer is on; opens on the
     * newest week. */
    heatWeeks: function (map, source, options) {
      var heat = L.heatLayer([], {
        radius: options.radius, blur: options.blur, minOpacity: options.minOpacity,
        gradient: options.gradient, max: 1
      });
      var data = {points: [], weeks: []};
      var weeks = [];
      var index = -1;
      var timer = null;
      var slider, label, button;

      function show(i) {
        index = i;
        var week = weeks[i];
        var latlngs = week[1].map(function (cell, k) {
          var point = data.points[cell];
          return [point[0], point[1], week[2][k]];
        });
        heat.setLatLngs(latlngs);
        if (slider) {
          slider.value = String(i);
          label.textContent = week[0];
        }
      }

      function stop() {
        if (timer !== null) {
          window.clearInterval(timer);
          timer = null;
        }
        if (button) {
          button.textContent = '\u25B6';
        }
      }

      var control = L.control({position: 'bottomright'});
      control.onAdd = function () {
        var box = L.DomUtil.create('div', 'gw-slider');
        var title = L.DomUtil.create('div', 'gw-legend-title', box);
        title.textContent = options.title;
        var line = L.DomUtil.create('div', 'gw-slider-line', box);
        button = L.DomUtil.create('button', 'gw-slider-play', line);
        button.type = 'button';
        button.textContent = '\u25B6';
        slider = L.DomUtil.create('input', 'gw-slider-range', line);
        slider.type = 'range';
        slider.min = '0';
        slider.max = String(Math.max(weeks.length - 1, 0));
        slider.step = '1';
        label = L.DomUtil.create('div', 'gw-slider-label', box);
        L.DomEvent.disableClickPropagation(box);
        L.DomEvent.disableScrollPropagation(box);
        slider.addEventListener('input', function () {
          stop();
          show(Number(slider.value));
        });
        button.addEventListener('click', function () {
          if (timer !== null) {
            stop();
            return;
          }
          button.textContent = '\u275A\u275A';
          if (index >= weeks.length - 1) {
            show(0);
          }
          timer = window.setInterval(function () {
            if (index >= weeks.length - 1) {
              stop();
              return;
            }
            show(index + 1);
          }, 1200);
        });
        return box;
      };
      var controlShown = false;
      function start() {
        if (!weeks.length || !map.hasLayer(heat) || controlShown) {
          return;
        }
        controlShown = true;
        control.addTo(map);
        show(index);
      }
      withData(heat, source, function (loaded) {
        data = loaded;
        weeks = loaded.weeks;
        index = weeks.length - 1;
        start();
      });
      heat.on('add', start);
      heat.on('remove', function () {
        stop();
        if (controlShown) {
          control.remove();
          controlShown = false;
        }
      });
      return heat;
    },

    /* Marks the document once every layer is drawn (browser tests wait for it). */
    ready: function (map) {
      map.whenReady(function () {
        document.body.setAttribute('data-map-ready', '1');
      });
    }
  };
}());
