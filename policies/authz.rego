# The gateway's authorization policy for the demo shop.
#
# The gateway asks for the whole package document, data.strangler.authz, and reads three
# keys: `allow` (only a boolean true lets a request through), `reason` (a string the
# client gets in the 403 body) and `override` (only a boolean true lets the caller choose
# the upstream with X-Strangler-Target). Everything not allowed below is denied.
#
# Input: the document gateway/decision_input.py builds, shaped like OPA-Envoy's input:
#   input.attributes.request.http.method      "GET", "POST", ...
#   input.parsed_path                         the normalised path's segments, decoded
#   input.claims                              the verified JWT claims, {} when anonymous
#   input.route, input.target                 the matched route's name and its upstream
#   input.override                            the upstream asked for in X-Strangler-Target;
#                                             absent when the header is not sent
#
# Paths match on input.parsed_path, exactly and case-sensitively: "/ADMIN" is not "/admin",
# "/products/" (["products", ""], a trailing slash keeps an empty last segment as Envoy
# does) is not "/products". The gateway normalises the path before it builds the input and
# forwards that same path, so parsed_path never holds "." or ".." segments, empty segments
# (other than that trailing one), or an encoded "/" (rejected with 400 before policy runs).
#
# Written for regopy 1.5.2 as well as OPA: sprintf("%s", [concat(...)]) quotes the string
# in regopy, so messages are built with concat only.
package strangler.authz

import rego.v1

default allow := false

method := input.attributes.request.http.method

segments := input.parsed_path

path := concat("", ["/", concat("/", segments)])

roles contains role if {
	some role in input.claims.roles
	is_string(role)
}

signed_in if {
	is_string(input.claims.sub)
	input.claims.sub != ""
}

read if method in {"GET", "HEAD"}

# The catalogue, search and the health check are public reads.
allow if {
	read
	public_resource
}

public_resource if segments == ["health"]

public_resource if segments[0] == "search"

public_resource if segments == ["products"]

public_resource if product_item

product_item if {
	count(segments) == 2
	segments[0] == "products"
	segments[1] != ""
}

# Orders: a signed-in buyer lists and places their own (the monolith scopes /orders to
# X-User-Id, which the gateway sets from the token's sub). There is no /orders/{id} yet.
allow if {
	signed_in
	"buyer" in roles
	segments == ["orders"]
	method in {"GET", "POST"}
}

# A user's record: the user themself, or an admin.
allow if {
	method == "GET"
	user_item
	signed_in
	input.claims.sub == segments[1]
}

allow if {
	method == "GET"
	user_item
	"admin" in roles
}

user_item if {
	count(segments) == 2
	segments[0] == "users"
	segments[1] != ""
}

# Product writes are for admins.
allow if {
	"admin" in roles
	product_write
}

product_write if {
	method == "POST"
	segments == ["products"]
}

product_write if {
	method in {"PUT", "DELETE"}
	product_item
}

# The gateway's own admin API, /_strangler and everything under it.
allow if {
	"admin" in roles
	segments[0] == "_strangler"
}

# Testers of a migration choose which upstream answers them (X-Strangler-Target: search),
# whatever the route's split says. `allow` still decides the request itself, for the
# upstream the split picked (input.target); the gateway honours the choice only when this
# is true, and only for an upstream of the matched route. Everyone else's header is ignored.
default override := false

override if {
	"migration-tester" in roles
	is_string(input.override)
}

# The dashboard's page, script and style hold no data: a browser cannot send a token when
# it navigates, so anyone may load them. The data they fetch (/_strangler/dashboard.json)
# is admin-only like the rest of the admin API.
allow if {
	read
	dashboard_asset
}

dashboard_asset if segments == ["_strangler", ""]

dashboard_asset if segments == ["_strangler", "dashboard.js"]

dashboard_asset if segments == ["_strangler", "dashboard.css"]

# GET /metrics with `metrics: {access: policy}` (the default): the gateway asks with route
# "_metrics", a name no route in routes.yaml can have, whatever path metrics is served at.
# Admins may read it, and scrapers given the `metrics` role.
allow if {
	read
	input.route == "_metrics"
	input.target == "gateway"
	some role in ["admin", "metrics"]
	role in roles
}

reason := "the admin API needs the admin role" if {
	not allow
	segments[0] == "_strangler"
} else := "metrics need the admin or metrics role" if {
	not allow
	input.route == "_metrics"
} else := "orders need a signed-in buyer" if {
	not allow
	segments == ["orders"]
	method in {"GET", "POST"}
} else := "a user's record is readable by that user or an admin" if {
	not allow
	method == "GET"
	user_item
} else := "product writes need the admin role" if {
	not allow
	product_write
} else := concat("", ["no rule allows ", method, " ", path]) if {
	not allow
}
