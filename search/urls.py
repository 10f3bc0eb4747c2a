from django.urls import path, re_path

from search import api, views
from search.assistants.views import suggestion_accept

app_name = "search"

urlpatterns = [
    path("search/", views.search, name="search"),
    path("search/photo/", views.photo_search, name="photo"),
    path("search/go/<str:token>/<int:product_id>/", views.result_click, name="click"),
    path("staff/compare/", views.compare, name="compare"),
    path("staff/suggestions/<int:product_id>/accept/", suggestion_accept, name="suggestion_accept"),
    path("api/products/<str:pk>/similar", api.product_similar, name="api_similar"),
    path("api/search", api.search, name="api_search"),
    path("api/search/image", api.search_image, name="api_search_image"),
    path("api/schema", api.schema, name="api_schema"),
    re_path(r"^api/(?P<path>.*)$", api.not_found),
]
