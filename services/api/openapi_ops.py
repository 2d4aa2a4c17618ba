"""The pieces the OpenAPI document is built from: operations, parameters, responses."""

from __future__ import annotations

from services.api.openapi_schemas import ERROR_RESPONSES, STR, Schema, ref


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
        codes.add(401)
    if body is not None:
        codes |= {400, 413, 422}
    for code in sorted(codes):
        resp = json_content("Error", ERROR_RESPONSES[code])
        if code == 429:
            resp["headers"] = {
                "Retry-After": {"schema": {"type": "string"}, "description": "seconds"}
            }
        responses[str(code)] = resp
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
