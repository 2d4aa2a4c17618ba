"""The add and edit forms of webhooks and inbound webhooks, and their Enable and Disable:
one flow for both kinds, each bringing its form module (its fields), its store and words."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from aiohttp import web
from multidict import MultiDictProxy

from services.api.bodies import path_name
from services.api.console.views import me, notice, page, read_form, see_other
from shared.core.errors import Conflict, ValidationError


class FormFields(Protocol):
    """What a kind's form module (`forms`, `inbound_forms`) offers."""

    def blank(self, repo: str | None) -> dict[str, Any]: ...

    def values_of(self, item: Any, /) -> dict[str, Any]: ...

    def submitted(self, form: MultiDictProxy[Any]) -> dict[str, Any]: ...

    def body_of(self, values: dict[str, Any], *, secret: str | None = None) -> dict[str, Any]: ...

    def form_field(self, api_field: str | None) -> str: ...

    def changes(self, item: Any, body: dict[str, Any], /) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Editor:
    path: str  # where an item's pages are: "/webhooks" for /webhooks/{id}
    new_path: str  # the add form's, in an org: "/orgs/{org}/webhooks/new"
    template: str  # the form's page
    name: str  # what the form's page calls the edited item: "webhook", "hook"
    fields: FormFields
    store: web.AppKey[Any]  # create(org, repo, body), get(id, org), update(id, org, body)
    choices: Callable[[], dict[str, Any]]  # the form's select options
    added: Callable[[Any], str]  # the notice over the new item's page
    disabled: str  # the notice after Disable
    noun: str  # "webhook", on the delete page
    deleted: Callable[[Any], str]  # the notice after Delete
    scope_path: Callable[[Any], str]  # where Delete leads: the item's scope's list
    rotated: Callable[[Any], tuple[str, str]]  # the store's answer to rotate: secret, notice
    about: Callable[[web.Request, Any], dict[str, Any]] = lambda request, item: {}
    # ^ more for the delete page to show

    def add_routes(self, routes: web.RouteTableDef) -> None:
        routes.get(self.new_path)(self.new_form)
        routes.post(self.new_path)(self.create)
        routes.get(self.path + "/{id}/edit")(self.edit_form)
        routes.post(self.path + "/{id}/edit")(self.save)
        routes.post(self.path + "/{id}/enable")(self.enable)
        routes.post(self.path + "/{id}/disable")(self.disable)
        routes.post(self.path + "/{id}/rotate-secret")(self.rotate)
        routes.get(self.path + "/{id}/delete")(self.confirm_delete)
        routes.post(self.path + "/{id}/delete")(self.delete)

    async def item(self, request: web.Request) -> Any:
        """The item the path's `{id}` names, as the signed-in user may see it (404 otherwise)."""
        return await request.config_dict[self.store].get(request.match_info["id"], me(request).org)

    async def _form(
        self,
        request: web.Request,
        values: dict[str, Any],
        org: str,
        item: Any,
        errors: dict[str, str] | None = None,
        status: int = 200,
    ) -> web.Response:
        context = {"values": values, "errors": errors or {}, **self.choices()}
        context.update({"org": org, self.name: item, "item": item})
        context.update({"noun": self.noun, "path": self.path})
        return await page(request, self.template, context, status=status)

    async def new_form(self, request: web.Request) -> web.Response:
        org = path_name(request, "org")
        me(request).check_org(org)
        return await self._form(request, self.fields.blank(request.query.get("repo")), org, None)

    async def create(self, request: web.Request) -> web.Response:
        org = path_name(request, "org")
        me(request).check_org(org)
        form = await read_form(request)
        values = self.fields.submitted(form)
        secret = form.get("secret")
        try:
            repo = values["repo"] or None
            if repo is not None and (len(repo) > 100 or "/" in repo or not repo.isprintable()):
                raise ValidationError(
                    "a repository name is 1-100 characters without '/'", field="repo"
                )
            body = self.fields.body_of(values, secret=secret if isinstance(secret, str) else None)
            item, plain = await request.config_dict[self.store].create(org, repo, body)
        except (ValidationError, Conflict) as exc:
            field = (
                self.fields.form_field(exc.field) if isinstance(exc, ValidationError) else "form"
            )
            errors = {field: exc.message}
            return await self._form(request, values, org, None, errors, exc.http_status)
        await notice(request, secret=plain, label="Secret", text=self.added(item))
        see_other(f"{self.path}/{item.id}")

    async def edit_form(self, request: web.Request) -> web.Response:
        item = await self.item(request)
        return await self._form(request, self.fields.values_of(item), item.org, item)

    async def save(self, request: web.Request) -> web.Response:
        """Saves only what the form changed, or shows it again with the field at fault."""
        item = await self.item(request)
        form = await read_form(request)
        values = {**self.fields.submitted(form), "repo": item.repo or ""}
        try:
            body = self.fields.changes(item, self.fields.body_of(values))
            if body:
                await request.config_dict[self.store].update(item.id, me(request).org, body)
        except ValidationError as exc:
            errors = {self.fields.form_field(exc.field): exc.message}
            return await self._form(request, values, item.org, item, errors, 422)
        await notice(request, text="Saved." if body else "Nothing changed.")
        see_other(f"{self.path}/{item.id}")

    async def enable(self, request: web.Request) -> web.Response:
        await self._set_active(request, True, "Enabled.")

    async def disable(self, request: web.Request) -> web.Response:
        await self._set_active(request, False, self.disabled)

    async def _set_active(self, request: web.Request, active: bool, text: str) -> NoReturn:
        item = await self.item(request)
        await read_form(request)
        if item.active != active:
            await request.config_dict[self.store].update(
                item.id, me(request).org, {"active": active}
            )
        await notice(request, text=text)
        see_other(f"{self.path}/{item.id}")

    async def confirm_delete(self, request: web.Request) -> web.Response:
        item = await self.item(request)
        context = {self.name: item, "noun": self.noun, "base": f"/console{self.path}/{item.id}"}
        return await page(request, "delete.html", {**context, **self.about(request, item)})

    async def delete(self, request: web.Request) -> web.Response:
        item = await self.item(request)
        await read_form(request)
        await request.config_dict[self.store].delete(item.id, me(request).org)
        await notice(request, text=self.deleted(item))
        see_other(self.scope_path(item))

    async def rotate(self, request: web.Request) -> web.Response:
        item = await self.item(request)
        await read_form(request)
        answer = await request.config_dict[self.store].rotate(item.id, me(request).org)
        secret, text = self.rotated(answer)
        await notice(request, secret=secret, label="Secret", text=text)
        see_other(f"{self.path}/{item.id}")
