# Unit tests for authz.rego, run by `opa test policies/` and by the test suite through regopy
# (tests/gateway/test_policy_rego.py).
#
# Inputs are given key by key (`with input.parsed_path as ...`), never whole (`with input as
# {...}`): regopy 1.5.2 crashes the process (SIGSEGV) on a whole-input `with` when the rule
# under test reads another rule. Its other quirks shape the rest: a `with` value that names a
# rule (`with input.claims as buyer`) comes out undefined, so values are literals or function
# calls; several `with` on one expression need a braced body.
package strangler.authz_test

import data.strangler.authz
import rego.v1

http(method) := {"request": {"http": {"method": method}}}

claims(sub, roles) := {"sub": sub, "roles": roles}

# Public reads: catalogue, search, health.

test_search_is_public if {
	authz.allow with input.attributes as http("GET") with input.parsed_path as ["search"]
}

test_search_subpaths_are_public if {
	authz.allow with input.attributes as http("GET") with input.parsed_path as ["search", "suggest"]
}

test_products_list_and_item_are_public if {
	authz.allow with input.attributes as http("GET") with input.parsed_path as ["products"]
	authz.allow with input.attributes as http("HEAD") with input.parsed_path as ["products", "42"]
}

test_health_is_public if {
	authz.allow with input.attributes as http("GET") with input.parsed_path as ["health"]
}

test_public_reads_are_reads_only if {
	not authz.allow with input.attributes as http("POST") with input.parsed_path as ["search"]
	r := authz.reason with input.attributes as http("POST") with input.parsed_path as ["search"]
	r == "no rule allows POST /search"
}

test_paths_match_exactly_and_case_sensitively if {
	not authz.allow with input.attributes as http("GET") with input.parsed_path as ["PRODUCTS"]
	not authz.allow with input.attributes as http("GET") with input.parsed_path as ["products", ""]
	not authz.allow with input.attributes as http("GET") with input.parsed_path as ["products", "1", "x"]
}

# Orders: signed-in buyers only.

test_buyer_lists_and_places_orders if {
	authz.allow with input.attributes as http("GET") with input.parsed_path as ["orders"] with input.claims as claims("alice", ["buyer"])
	authz.allow with input.attributes as http("POST") with input.parsed_path as ["orders"] with input.claims as claims("alice", ["buyer"])
}

test_anonymous_cannot_see_orders if {
	not authz.allow with input.attributes as http("GET") with input.parsed_path as ["orders"] with input.claims as {}
	r := authz.reason with input.attributes as http("GET") with input.parsed_path as ["orders"] with input.claims as {}
	r == "orders need a signed-in buyer"
}

test_orders_need_the_buyer_role if {
	not authz.allow with input.attributes as http("GET") with input.parsed_path as ["orders"] with input.claims as claims("root", ["admin"])
}

test_orders_need_a_subject if {
	not authz.allow with input.attributes as http("GET") with input.parsed_path as ["orders"] with input.claims as {"roles": ["buyer"]}
}

test_no_other_order_routes if {
	not authz.allow with input.attributes as http("GET") with input.parsed_path as ["orders", "7"] with input.claims as claims("alice", ["buyer"])
	not authz.allow with input.attributes as http("DELETE") with input.parsed_path as ["orders"] with input.claims as claims("alice", ["buyer"])
}

# Users: the user themself or an admin.

test_user_reads_own_record if {
	authz.allow with input.attributes as http("GET") with input.parsed_path as ["users", "alice"] with input.claims as claims("alice", ["buyer"])
}

test_user_cannot_read_another_record if {
	not authz.allow with input.attributes as http("GET") with input.parsed_path as ["users", "bob"] with input.claims as claims("alice", ["buyer"])
	r := authz.reason with input.attributes as http("GET") with input.parsed_path as ["users", "bob"] with input.claims as claims("alice", ["buyer"])
	r == "a user's record is readable by that user or an admin"
}

test_admin_reads_any_record if {
	authz.allow with input.attributes as http("GET") with input.parsed_path as ["users", "bob"] with input.claims as claims("root", ["admin"])
}

test_user_records_are_read_only if {
	not authz.allow with input.attributes as http("PUT") with input.parsed_path as ["users", "alice"] with input.claims as claims("alice", ["buyer"])
}

# Product writes: admins.

test_admin_writes_products if {
	authz.allow with input.attributes as http("POST") with input.parsed_path as ["products"] with input.claims as claims("root", ["admin"])
	authz.allow with input.attributes as http("PUT") with input.parsed_path as ["products", "1"] with input.claims as claims("root", ["admin"])
	authz.allow with input.attributes as http("DELETE") with input.parsed_path as ["products", "1"] with input.claims as claims("root", ["admin"])
}

test_buyer_cannot_write_products if {
	not authz.allow with input.attributes as http("POST") with input.parsed_path as ["products"] with input.claims as claims("alice", ["buyer"])
	r := authz.reason with input.attributes as http("DELETE") with input.parsed_path as ["products", "1"] with input.claims as claims("alice", ["buyer"])
	r == "product writes need the admin role"
}

test_roles_must_be_a_list_of_strings if {
	not authz.allow with input.attributes as http("POST") with input.parsed_path as ["products"] with input.claims as {"sub": "x", "roles": "admin"}
}

# The gateway's admin API.

test_admin_api_for_admins if {
	authz.allow with input.attributes as http("GET") with input.parsed_path as ["_strangler", "routes"] with input.claims as claims("root", ["admin"])
}

test_admin_api_denied_to_others if {
	not authz.allow with input.attributes as http("GET") with input.parsed_path as ["_strangler"] with input.claims as claims("alice", ["buyer"])
	r := authz.reason with input.attributes as http("GET") with input.parsed_path as ["_strangler", "routes"]
	r == "the admin API needs the admin role"
	not authz.allow with input.attributes as http("GET") with input.parsed_path as ["_STRANGLER"] with input.claims as claims("root", ["admin"])
}

test_dashboard_page_for_anyone_its_data_for_admins if {
	authz.allow with input.attributes as http("GET") with input.parsed_path as ["_strangler", ""]
	authz.allow with input.attributes as http("GET") with input.parsed_path as ["_strangler", "dashboard.js"]
	authz.allow with input.attributes as http("HEAD") with input.parsed_path as ["_strangler", "dashboard.css"]
	not authz.allow with input.attributes as http("POST") with input.parsed_path as ["_strangler", ""]
	not authz.allow with input.attributes as http("GET") with input.parsed_path as ["_strangler", "dashboard.json"]
	not authz.allow with input.attributes as http("GET") with input.parsed_path as ["_strangler", "dashboard.json"] with input.claims as claims("alice", ["buyer"])
	authz.allow with input.attributes as http("GET") with input.parsed_path as ["_strangler", "dashboard.json"] with input.claims as claims("root", ["admin"])
}

# GET /metrics (metrics.access: policy).

test_metrics_for_admins_and_scrapers if {
	authz.allow with input.attributes as http("GET") with input.parsed_path as ["metrics"] with input.route as "_metrics" with input.target as "gateway" with input.claims as claims("root", ["admin"])
	authz.allow with input.attributes as http("GET") with input.parsed_path as ["stats"] with input.route as "_metrics" with input.target as "gateway" with input.claims as claims("prometheus", ["metrics"])
}

test_metrics_denied_to_others if {
	not authz.allow with input.attributes as http("GET") with input.parsed_path as ["metrics"] with input.route as "_metrics" with input.target as "gateway"
	not authz.allow with input.attributes as http("GET") with input.parsed_path as ["metrics"] with input.route as "_metrics" with input.target as "gateway" with input.claims as claims("alice", ["buyer"])
	r := authz.reason with input.attributes as http("GET") with input.parsed_path as ["metrics"] with input.route as "_metrics" with input.target as "gateway"
	r == "metrics need the admin or metrics role"
	not authz.allow with input.attributes as http("POST") with input.parsed_path as ["metrics"] with input.route as "_metrics" with input.target as "gateway" with input.claims as claims("root", ["admin"])

	# a route named otherwise, to an upstream named "gateway", is not the metrics endpoint
	not authz.allow with input.attributes as http("GET") with input.parsed_path as ["metrics"] with input.route as "metrics" with input.target as "gateway" with input.claims as claims("prometheus", ["metrics"])
}

# Everything else.

test_default_deny_names_the_request if {
	r := authz.reason with input.attributes as http("POST") with input.parsed_path as ["foo", "bar"]
	r == "no rule allows POST /foo/bar"
}

test_no_reason_when_allowed if {
	not authz.reason with input.attributes as http("GET") with input.parsed_path as ["products"]
}

# Tester overrides (X-Strangler-Target).

test_migration_testers_choose_the_upstream if {
	authz.override with input.claims as claims("tess", ["migration-tester"]) with input.override as "search"
}

test_nobody_else_chooses_the_upstream if {
	not authz.override with input.claims as claims("root", ["admin", "buyer"]) with input.override as "search"
	not authz.override with input.claims as {} with input.override as "search"
	not authz.override with input.claims as {"sub": "tess", "roles": "migration-tester"} with input.override as "search"
}

test_no_override_without_a_target if {
	not authz.override with input.claims as claims("tess", ["migration-tester"])
}

test_an_override_does_not_allow_the_request if {
	not authz.allow with input.attributes as http("DELETE") with input.parsed_path as ["orders"] with input.claims as claims("tess", ["migration-tester"]) with input.override as "search"
}
