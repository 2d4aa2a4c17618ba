"""The pieces the OpenAPI document is built from: operations, parameters, responses."""

from __future__ import annotations

from dataclasses import dataclass

from services.api.openapi_schemas import ERROR_RESPONSES, STR, TIME, Schema, ref


def json_content(schema: str, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}


def operation(
    summary: str,
    ok: dict[int, Schema],
    errors: tuple[int, ...],
    *,
    body: str | None = None,
    params: list[Schema] | None = None,
    public: bool = False,
    tag: str,
) -> Schema:
    responses: dict[str, Schema] = {str(code): resp for code, resp in ok.items()}
    codes = set(errors) | ({404, 405} if not public else set())
    if not public:
        codes |= {401, 503}  # the token is looked up in PostgreSQL
    if body is not None:
        codes |= {400, 413, 422}
    for code in sorted(codes):
        responses[str(code)] = error_response(code)
    op: Schema = {"summary": summary, "tags": [tag], "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(body)}},
        }
    if public:
        op["security"] = []
    return op


def error_response(code: int) -> Schema:
    resp = json_content("Error", ERROR_RESPONSES[code])
    if code in (429, 503):
        resp["headers"] = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}
    return resp


def path_param(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": STR, "description": description}


def query_param(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


ORG, REPO = path_param("org", "organisation"), path_param("repo", "repository")
WID, DID, TID = (
    path_param("id", "webhook id"),
    path_param("id", "delivery id"),
    path_param("id", "token id"),
)
NO_CONTENT = {"description": "Done."}
ADMIN = " Admin token only (an org token answers 403)."


def page_params(filters: list[Schema], since: str, until: str, max_limit: int) -> list[Schema]:
    """A keyset-paginated listing's query: its own filters, then a time window and a page."""
    limit = {"type": "integer", "minimum": 1, "maximum": max_limit, "default": 50}
    return [
        *filters,
        query_param("since", TIME, since),
        query_param("until", TIME, until),
        query_param("limit", limit, "page size"),
        query_param("cursor", STR, "`next_cursor` of the previous page (opaque)"),
    ]


@dataclass(frozen=True)
class Managed:
    """A resource made in a scope (a repository or an organisation) and then managed by id:
    webhooks and inbound webhooks share the shape of their routes and schemas."""

    noun: str  # "inbound webhook"
    schema: str  # its read shape, "InboundWebhook"; also "…WithSecret" when created
    prefix: str  # of its other schemas: "Inbound" for InboundCreate, InboundPatch, InboundList
    tag: str

    @property
    def created(self) -> dict[int, Schema]:
        return {
            201: json_content(
                self.schema + "WithSecret", "Created; the secret is shown only here and on rotate."
            )
        }

    @property
    def listed(self) -> dict[int, Schema]:
        noun = self.noun[0].upper() + self.noun[1:]
        return {200: json_content(self.prefix + "List", f"{noun}s, never with secrets.")}

    def collection(self, params: list[Schema], create: str, listing: str) -> Schema:
        """Create in a scope (409 when the scope is full) and list the scope's."""
        return {
            "post": operation(
                create,
                self.created,
                (409,),
                body=self.prefix + "Create",
                params=params,
                tag=self.tag,
            ),
            "get": operation(listing, self.listed, (), params=params, tag=self.tag),
        }

    def item(
        self,
        params: list[Schema],
        read: str,
        change: str,
        delete: str,
        *,
        patched: dict[int, Schema] | None = None,
        patch_errors: tuple[int, ...] = (),
    ) -> Schema:
        """Read, change and delete one by id (`patched`: the change's other answers)."""
        return {
            "get": operation(
                read,
                {200: json_content(self.schema, f"The {self.noun}.")},
                (),
                params=params,
                tag=self.tag,
            ),
            "patch": operation(
                change,
                {200: json_content(self.schema, "Updated."), **(patched or {})},
                patch_errors,
                body=self.prefix + "Patch",
                params=params,
                tag=self.tag,
            ),
            "delete": operation(delete, {204: NO_CONTENT}, (), params=params, tag=self.tag),
        }
